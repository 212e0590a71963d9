using System.Reflection;
using Gati.MLNet.Data;
using Gati.MLNet.Models;

namespace Gati.MLNet.Inference;

/// <summary>
/// Serves predictions of a base model with learned caches, like ML.NET's PredictionEngine but batched and with
/// real early exit: typed single and batch calls (<typeparamref name="TInput"/> → <typeparamref name="TOutput"/>)
/// and an untyped call over a span of images. Safe for concurrent callers (calls are serialised on the model's
/// networks); every call runs in its own DisposeScope, so native memory stays flat.
/// </summary>
/// <typeparam name="TInput"><see cref="ImageInput"/>, a class with a float[] member holding the model's input (named after
/// the model's image column, e.g. <c>Image</c>, or marked <c>[ColumnName("Image")]</c>), or — for a model whose chain starts
/// with ML.NET transforms that make that column, such as an imported pipeline's LoadImages, ResizeImages and
/// ExtractPixels — a class with what they read (e.g. <c>string ImagePath</c>).</typeparam>
/// <typeparam name="TOutput">A class with any of these members (by name or <c>[ColumnName]</c>): <c>PredictedLabel</c>
/// (uint key, or string class name), <c>PredictedClass</c> (string), <c>Score</c> (float[] probabilities),
/// <c>ExitLayer</c> (int, 0 = full model), <c>LatencyMs</c> (double or float). <see cref="EarlyExitPrediction"/> has them all.</typeparam>
public sealed class EarlyExitPredictionEngine<TInput, TOutput> : IDisposable
    where TInput : class
    where TOutput : class, new()
{
    private readonly EarlyExitEngine _engine;
    private readonly InputPreparation<TInput> _input;
    private readonly Action<TOutput, EarlyExitBatch, int>[] _writers;

    /// <param name="engine">The engine (this object takes it over).</param>
    /// <param name="imageColumnName">The base model's input column.</param>
    /// <param name="prefix">The model's transformers before its base model (they make the input column from what
    /// <typeparamref name="TInput"/> holds when it does not hold the column itself); null when there are none.</param>
    /// <param name="context">Creates ML.NET prediction engines for <paramref name="prefix"/>.</param>
    internal EarlyExitPredictionEngine(EarlyExitEngine engine, string imageColumnName, Microsoft.ML.ITransformer? prefix = null, Microsoft.ML.MLContext? context = null)
    {
        _engine = engine;
        _input = new InputPreparation<TInput>(imageColumnName, prefix, context ?? new Microsoft.ML.MLContext());
        _writers = OutputWriters(engine.ClassNames).ToArray();
    }

    /// <summary>The untyped engine underneath (online caches shadow it).</summary>
    internal EarlyExitEngine Inner => _engine;

    /// <summary>The base model served (its description, input shape, classes and cut points).</summary>
    public BaseModel BaseModel => _engine.BaseModel;

    /// <summary>[C, H, W] of the images the model reads.</summary>
    public TensorShape InputShape => _engine.InputShape;

    /// <summary>The base network's configuration, for a Gati ResNet base model.</summary>
    /// <exception cref="InvalidOperationException">The base model is an imported network (see <see cref="BaseModel"/>).</exception>
    public ResNetConfig Config => _engine.BaseModel is ResNetBaseModel resnet ? resnet.Config
        : throw new InvalidOperationException($"The base model is {_engine.BaseModel.Description}, not a Gati ResNet: use BaseModel and InputShape.");

    /// <summary>
    /// The per-channel normalisation of the training images, when the model recorded it: apply it (with
    /// <see cref="Data.ChannelNormalization.Normalize"/>) to raw pixels scaled to [0, 1] before predicting.
    /// </summary>
    public Data.ChannelNormalization? InputNormalization => _engine.InputNormalization;

    /// <summary>The caches in use, by layer (empty: the engine runs the full model).</summary>
    public IReadOnlyList<LearnedCache> Caches => _engine.Caches;

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames => _engine.ClassNames;

    /// <summary>The device the networks run on ("cpu", "cuda:0").</summary>
    public string Device => _engine.Device;

    /// <summary>The runtime that executes the networks.</summary>
    public ExecutionBackend Backend => _engine.Backend;

    /// <summary>The runtime in words, for logs and reports (version, device, threads).</summary>
    public string BackendDescription => _engine.BackendDescription;

    /// <summary>Predicts one input.</summary>
    public TOutput Predict(TInput input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return Predict([input])[0];
    }

    /// <summary>Predicts a batch in one engine call: rows that hit a cache leave the batch early.</summary>
    public TOutput[] Predict(IReadOnlyList<TInput> inputs) => PredictWithExits(inputs).Outputs;

    /// <summary>Like <see cref="Predict(IReadOnlyList{TInput})"/>, also returning each row's exit layer (for metrics).</summary>
    internal (TOutput[] Outputs, int[] ExitLayers) PredictWithExits(IReadOnlyList<TInput> inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        if (inputs.Count == 0) throw new ArgumentException("The batch is empty: pass at least one input.", nameof(inputs));
        var size = InputShape.Size;
        var images = new float[inputs.Count * size];
        for (var i = 0; i < inputs.Count; i++)
        {
            var image = _input.Prepare(inputs[i] ?? throw new ArgumentException($"Input {i} is null.", nameof(inputs)))
                ?? throw new ArgumentException($"Input {i}: {_input.Describe} is null.", nameof(inputs));
            if (image.Length != size)
                throw new ArgumentException($"Input {i}: {_input.Describe} has {image.Length} values, but the model reads {InputShape} = {size}.", nameof(inputs));
            image.CopyTo(images, i * size);
        }
        var batch = Run(images, inputs.Count);
        return (Write(batch), batch.ExitLayer);
    }

    /// <summary>Predicts <paramref name="count"/> images given as one span (row-major, C*H*W each).</summary>
    public EarlyExitPrediction[] Predict(ReadOnlySpan<float> images, int count)
    {
        if (count < 1) throw new ArgumentException("The batch is empty: pass at least one image.", nameof(count));
        var size = InputShape.Size;
        if (images.Length != count * size)
            throw new ArgumentException($"{images.Length} values for {count} images of {InputShape} (expected {count * size}).", nameof(images));
        var batch = Run(images.ToArray(), count);
        var result = new EarlyExitPrediction[count];
        for (var i = 0; i < count; i++) result[i] = ToPrediction(batch, i, ClassNames);
        return result;
    }

    private EarlyExitBatch Run(float[] images, int count)
    {
        var size = InputShape.Size;
        for (var i = 0; i < images.Length; i++)
            if (!float.IsFinite(images[i]))
                throw new ArgumentException($"Input {i / size}: the image holds {images[i]} at index {i % size}; images must be finite numbers.");
        return _engine.Run(images, count);
    }

    internal static EarlyExitPrediction ToPrediction(EarlyExitBatch batch, int row, IReadOnlyList<string> classNames)
    {
        var k = classNames.Count;
        return new EarlyExitPrediction
        {
            PredictedLabel = (uint)batch.PredictedClass[row] + 1,
            PredictedClass = classNames[batch.PredictedClass[row]],
            Score = batch.Probabilities.AsSpan(row * k, k).ToArray(),
            ExitLayer = batch.ExitLayer[row],
            LatencyMs = batch.ElapsedMs,
        };
    }

    private TOutput[] Write(EarlyExitBatch batch)
    {
        var outputs = new TOutput[batch.ExitLayer.Length];
        for (var i = 0; i < outputs.Length; i++)
        {
            var output = new TOutput();
            foreach (var write in _writers) write(output, batch, i);
            outputs[i] = output;
        }
        return outputs;
    }

    /// <summary>Releases this engine's share of the networks.</summary>
    public void Dispose()
    {
        _engine.Dispose();
        _input.Dispose();
    }

    private static string ColumnName(MemberInfo member) => InputPreparation<TInput>.ColumnName(member);

    private static IEnumerable<MemberInfo> Members(Type type) => InputPreparation<TInput>.Members(type);

    private static Type MemberType(MemberInfo member) => InputPreparation<TInput>.MemberType(member);

    private static IEnumerable<Action<TOutput, EarlyExitBatch, int>> OutputWriters(IReadOnlyList<string> classNames)
    {
        var k = classNames.Count;
        foreach (var member in Members(typeof(TOutput)))
        {
            if (member is PropertyInfo { CanWrite: false }) continue;
            Action<object, object?> set = member is PropertyInfo p ? p.SetValue : ((FieldInfo)member).SetValue;
            var type = MemberType(member);
            switch (ColumnName(member))
            {
                case "PredictedLabel" when type == typeof(uint):
                    yield return (o, b, i) => set(o, (uint)b.PredictedClass[i] + 1);
                    break;
                case "PredictedLabel" or "PredictedClass" when type == typeof(string):
                    yield return (o, b, i) => set(o, classNames[b.PredictedClass[i]]);
                    break;
                case "Score" when type == typeof(float[]):
                    yield return (o, b, i) => set(o, b.Probabilities.AsSpan(i * k, k).ToArray());
                    break;
                case "ExitLayer" when type == typeof(int):
                    yield return (o, b, i) => set(o, b.ExitLayer[i]);
                    break;
                case "LatencyMs" when type == typeof(double):
                    yield return (o, b, _) => set(o, b.ElapsedMs);
                    break;
                case "LatencyMs" when type == typeof(float):
                    yield return (o, b, _) => set(o, (float)b.ElapsedMs);
                    break;
            }
        }
    }
}
