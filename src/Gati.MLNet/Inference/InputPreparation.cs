using System.Collections.Concurrent;
using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Inference;

/// <summary>
/// How an early-exit engine gets the base model's input from a <typeparamref name="TInput"/>: an <see cref="ImageInput"/>'s
/// <c>Image</c>; a float[] member named like the model's image column; when the model's chain starts with ML.NET
/// transforms that make that column (an imported pipeline's LoadImages, ResizeImages, ExtractPixels) and
/// <typeparamref name="TInput"/> has what they read (e.g. <c>ImagePath</c>), those transforms, run through pooled ML.NET
/// prediction engines (one per concurrent call: ML.NET's are not thread-safe); otherwise a float[] <c>Image</c> member,
/// read as the base model's input itself.
/// </summary>
internal sealed class InputPreparation<TInput> : IDisposable where TInput : class
{
    private readonly Func<TInput, float[]?>? _member;
    private readonly ITransformer? _prefix;
    private readonly MLContext? _context;
    private readonly SchemaDefinition? _outputSchema;
    private readonly ConcurrentBag<PredictionEngine<TInput, PreparedImage>> _engines = new();
    private bool _disposed;

    public InputPreparation(string imageColumnName, ITransformer? prefix, MLContext context)
    {
        ImageColumnName = imageColumnName;
        if (typeof(TInput) == typeof(ImageInput))
        {
            _member = input => ((ImageInput)(object)input).Image;
            Describe = nameof(ImageInput.Image);
            return;
        }
        if (FloatArray(imageColumnName) is { } named)
        {
            (_member, Describe) = (named.Read, named.Name);
            return;
        }
        // The conventional 'Image' member (what ImageInput and Gati's own models use) holds the base model's input as
        // it reads it when nothing else can make it: a server that decodes images itself (the web sample) serves an
        // imported pipeline's model, whose base model reads 'Pixels' after the pipeline's ExtractPixels, this way.
        var image = imageColumnName == DefaultColumnNames.Image ? null : FloatArray(DefaultColumnNames.Image);
        if (prefix is null)
        {
            if (image is null)
                throw new ArgumentException(
                    $"{typeof(TInput).Name} needs a public float[] property or field named '{imageColumnName}' (or marked [ColumnName(\"{imageColumnName}\")]) holding the model's input.");
            (_member, Describe) = (image.Value.Read, $"{image.Value.Name} (as the base model's '{imageColumnName}')");
            return;
        }
        // The model's own transforms make the image column from what TInput holds (checked now, not at the first request).
        _prefix = prefix;
        _context = context;
        _outputSchema = SchemaDefinition.Create(typeof(PreparedImage));
        _outputSchema[nameof(PreparedImage.Pixels)].ColumnName = imageColumnName;
        try
        {
            Return(Rent());
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            if (image is null)
                throw new ArgumentException(
                    $"{typeof(TInput).Name} has no float[] '{imageColumnName}' (nor a float[] '{DefaultColumnNames.Image}' holding it), and the model's transforms before its base model cannot make it from {typeof(TInput).Name}: {ex.Message}", ex);
            (_prefix, _context, _outputSchema) = (null, null, null);
            (_member, Describe) = (image.Value.Read, $"{image.Value.Name} (as the base model's '{imageColumnName}'; the model's transforms before it are not run)");
            return;
        }
        Describe = $"'{imageColumnName}' made by the model's transforms";
    }

    /// <summary>A readable public float[] member of <typeparamref name="TInput"/> for the column <paramref name="column"/>.</summary>
    private static (Func<TInput, float[]?> Read, string Name)? FloatArray(string column)
    {
        var member = Members(typeof(TInput)).FirstOrDefault(m => ColumnName(m) == column && MemberType(m) == typeof(float[]));
        return member switch
        {
            null => null,
            PropertyInfo p when p.CanRead => (input => (float[]?)p.GetValue(input), p.Name),
            FieldInfo f => (input => (float[]?)f.GetValue(input), f.Name),
            _ => throw new ArgumentException($"{typeof(TInput).Name}.{member.Name} is not readable."),
        };
    }

    public string ImageColumnName { get; }

    /// <summary>What the input is read from, for messages.</summary>
    public string Describe { get; }

    /// <summary>The model's input for <paramref name="input"/>, or null when it has none.</summary>
    public float[]? Prepare(TInput input)
    {
        if (_member is not null) return _member(input);
        var engine = Rent();
        try
        {
            var prepared = new PreparedImage();
            engine.Predict(input, ref prepared);
            return prepared.Pixels;
        }
        finally
        {
            Return(engine);
        }
    }

    private PredictionEngine<TInput, PreparedImage> Rent()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed), this);
        return _engines.TryTake(out var engine)
            ? engine
            : _context!.Model.CreatePredictionEngine<TInput, PreparedImage>(_prefix!, ignoreMissingColumns: true, outputSchemaDefinition: _outputSchema);
    }

    private void Return(PredictionEngine<TInput, PreparedImage> engine)
    {
        if (Volatile.Read(ref _disposed)) engine.Dispose();
        else _engines.Add(engine);
    }

    public void Dispose()
    {
        Volatile.Write(ref _disposed, true);
        while (_engines.TryTake(out var engine)) engine.Dispose();
    }

    internal static string ColumnName(MemberInfo member) => member.GetCustomAttribute<ColumnNameAttribute>()?.Name ?? member.Name;

    internal static IEnumerable<MemberInfo> Members(Type type) =>
        type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Cast<MemberInfo>()
            .Concat(type.GetFields(BindingFlags.Public | BindingFlags.Instance));

    internal static Type MemberType(MemberInfo member) => member is PropertyInfo p ? p.PropertyType : ((FieldInfo)member).FieldType;
}

/// <summary>The output row of an input preparation: the model's input, under the image column's name.</summary>
internal sealed class PreparedImage
{
    public float[]? Pixels { get; set; }
}
