using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(ChannelNormalizingTransformer), null, typeof(SignatureLoadModel), "Gati Normalize Channels", ChannelNormalizingTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// Normalises an image vector ([C, H, W] planar, pixels in [0, 1]) per channel: <c>(x - mean[c]) / std[c]</c>.
/// Created by <see cref="TransformsCatalogExtensions.NormalizeChannels"/>; saves and loads with the model.
/// </summary>
public sealed class ChannelNormalizingTransformer : GatiTransformerBase
{
    internal const string LoaderSignature = "GatiNormalizeChannels";

    internal ChannelNormalizingTransformer(IHostEnvironment environment, string outputColumnName, string inputColumnName, ChannelNormalization normalization)
        : base(environment, nameof(ChannelNormalizingTransformer))
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputColumnName);
        ArgumentException.ThrowIfNullOrWhiteSpace(inputColumnName);
        ArgumentNullException.ThrowIfNull(normalization);
        OutputColumnName = outputColumnName;
        InputColumnName = inputColumnName;
        Normalization = normalization;
    }

    /// <summary>The normalised output column.</summary>
    public string OutputColumnName { get; }

    /// <summary>The input column of pixels in [0, 1].</summary>
    public string InputColumnName { get; }

    /// <summary>Per-channel mean and standard deviation.</summary>
    public ChannelNormalization Normalization { get; }

    private static VersionInfo GetVersionInfo() => ModelStreamVersion("GATINRMC", 0x00010001, LoaderSignature);

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) => new Mapper(this, inputSchema);

    private protected override VersionInfo ModelVersion => GetVersionInfo();

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        // string output column, string input column, int32 channels, then channels x (float mean, float std)
        ctx.Writer.Write(OutputColumnName);
        ctx.Writer.Write(InputColumnName);
        ctx.Writer.Write(Normalization.Channels);
        for (var c = 0; c < Normalization.Channels; c++)
        {
            ctx.Writer.Write(Normalization.Mean[c]);
            ctx.Writer.Write(Normalization.Std[c]);
        }
    }

    private static ChannelNormalizingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var output = ctx.Reader.ReadString();
        var input = ctx.Reader.ReadString();
        var channels = ModelText.ReadInt(ctx.Reader, "channel count", 1, 64);
        var mean = new float[channels];
        var std = new float[channels];
        for (var c = 0; c < channels; c++)
        {
            mean[c] = ctx.Reader.ReadSingle();
            std[c] = ctx.Reader.ReadSingle();
        }
        return new ChannelNormalizingTransformer(env, output, input, new ChannelNormalization(mean, std));
    }

    private sealed class Mapper : BatchMapper
    {
        private readonly ChannelNormalizingTransformer _parent;
        private readonly int _plane;

        public Mapper(ChannelNormalizingTransformer parent, DataViewSchema inputSchema)
            : base(inputSchema, [parent.InputColumnName], batchSize: 1)
        {
            _parent = parent;
            var type = (VectorDataViewType)InputColumns[0].Type;
            var channels = parent.Normalization.Channels;
            if (InputSizes[0] % channels != 0)
                throw new ArgumentException($"Column '{parent.InputColumnName}' has {InputSizes[0]} values, not a whole number of {channels}-channel planes.");
            _plane = InputSizes[0] / channels;
            var dims = type.Dimensions.Length > 1 ? type.Dimensions.ToArray() : null;
            if (dims is not null && dims[0] != channels)
                throw new ArgumentException($"Column '{parent.InputColumnName}' has {dims[0]} channels ({type}) but the normalisation has {channels}.");
            Outputs = [OutputColumn.Vector(parent.OutputColumnName, InputSizes[0], Annotations.Normalization(parent.Normalization), dims)];
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }

        public override void Map(float[][] inputs, int count, Array?[] outputs, bool[] active)
        {
            if (outputs[0] is not float[] target) return;
            var source = inputs[0];
            var size = InputSizes[0];
            var norm = _parent.Normalization;
            for (var row = 0; row < count; row++)
            {
                for (var c = 0; c < norm.Channels; c++)
                {
                    var offset = row * size + c * _plane;
                    var mean = norm.Mean[c];
                    var scale = 1f / norm.Std[c];
                    for (var i = 0; i < _plane; i++) target[offset + i] = (source[offset + i] - mean) * scale;
                }
            }
        }
    }
}

/// <summary>The estimator of <see cref="ChannelNormalizingTransformer"/> (nothing to learn).</summary>
public sealed class ChannelNormalizingEstimator : IEstimator<ChannelNormalizingTransformer>
{
    private readonly IHostEnvironment _environment;
    private readonly string _output;
    private readonly string _input;
    private readonly ChannelNormalization _normalization;

    internal ChannelNormalizingEstimator(IHostEnvironment environment, string outputColumnName, string inputColumnName, ChannelNormalization normalization)
    {
        _environment = environment;
        _output = outputColumnName;
        _input = inputColumnName;
        _normalization = normalization;
    }

    /// <inheritdoc/>
    public ChannelNormalizingTransformer Fit(IDataView input) => new(_environment, _output, _input, _normalization);

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        if (!inputSchema.TryFindColumn(_input, out var column) || column.Kind != SchemaShape.Column.VectorKind.Vector || column.ItemType != NumberDataViewType.Single)
            throw new ArgumentException($"Column '{_input}' must be a known-size Vector<Single>.");
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_output] = SchemaShapes.VectorColumn(_output);
        return new SchemaShape(columns.Values);
    }
}

/// <summary>Gati transforms on <c>mlContext.Transforms</c>.</summary>
public static class TransformsCatalogExtensions
{
    /// <summary>Per-channel normalisation of a planar image vector with pixels in [0, 1] (e.g. from ExtractPixels with scaleImage 1/255).</summary>
    /// <param name="catalog">mlContext.Transforms.</param>
    /// <param name="outputColumnName">Normalised output, Vector&lt;Single, C, H, W&gt;.</param>
    /// <param name="inputColumnName">Input pixels, Vector&lt;Single, C, H, W&gt; in [0, 1].</param>
    /// <param name="normalization">Per-channel mean and std, e.g. <see cref="ChannelNormalization.Cifar10"/>.</param>
    public static ChannelNormalizingEstimator NormalizeChannels(this TransformsCatalog catalog, string outputColumnName, string inputColumnName,
        ChannelNormalization normalization)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new ChannelNormalizingEstimator(catalog.GetEnvironment(), outputColumnName, inputColumnName, normalization);
    }
}
