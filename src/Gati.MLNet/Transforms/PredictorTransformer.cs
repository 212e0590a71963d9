using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(PredictorTransformer), null, typeof(SignatureLoadModel), "Gati Predictor", PredictorTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// A trained predictor of one hidden layer: reads the layer's features and adds its class log-probabilities
/// (Vector&lt;Single, k&gt; with SlotNames) and predicted class (Key&lt;UInt32, k&gt; with KeyValues), scoring in batches.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type</description></listheader>
/// <item><term>input: Layer{n}</term><description>Vector&lt;Single, C, H, W&gt; (from the feature extractor or a dump)</description></item>
/// <item><term>output: L{n}.{arch}.Score</term><description>Vector&lt;Single, k&gt; log-probabilities</description></item>
/// <item><term>output: L{n}.{arch}.PredictedLabel</term><description>Key&lt;UInt32, k&gt;</description></item>
/// </list>
/// </remarks>
public sealed class PredictorTransformer : GatiTransformerBase
{
    internal const string LoaderSignature = "GatiPredictor";

    private readonly SharedModule<PredictorNetwork> _network;

    internal PredictorTransformer(IHostEnvironment environment, SharedModule<PredictorNetwork> network, int layer, IReadOnlyList<string> classNames,
        string featureColumnName, string scoreColumnName, string predictedLabelColumnName, int batchSize, PredictorTrainingSummary summary)
        : base(environment, nameof(PredictorTransformer))
    {
        _network = network;
        if (classNames.Count != network.Module.Classes)
        {
            network.Release();
            throw new ArgumentException($"{classNames.Count} class names for a {network.Module.Classes}-class predictor.", nameof(classNames));
        }
        Layer = layer;
        ClassNames = classNames.ToArray();
        FeatureColumnName = featureColumnName;
        ScoreColumnName = scoreColumnName;
        PredictedLabelColumnName = predictedLabelColumnName;
        BatchSize = batchSize;
        Summary = summary;
        _network.Module.eval();
    }

    /// <summary>The 1-based layer whose features this predictor reads.</summary>
    public int Layer { get; }

    /// <summary>The predictor's architecture.</summary>
    public PredictorArchitecture Architecture => _network.Module.Architecture;

    /// <summary>D, the number of features read.</summary>
    public int InputSize => _network.Module.InputSize;

    /// <summary>The [C, H, W] of the features read, when known (always for Grid predictors).</summary>
    public TensorShape? FeatureShape => _network.Module.FeatureShape;

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>The feature column read.</summary>
    public string FeatureColumnName { get; }

    /// <summary>The log-probability output column.</summary>
    public string ScoreColumnName { get; }

    /// <summary>The predicted-class output column.</summary>
    public string PredictedLabelColumnName { get; }

    /// <summary>Rows per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>Held-out figures from training.</summary>
    public PredictorTrainingSummary Summary { get; }

    /// <summary>The device the predictor runs on.</summary>
    public string Device => _network.Device.ToString();

    /// <summary>Trainable parameters.</summary>
    public long ParameterCount => Architecture.ParameterCount(InputSize, ClassNames.Count, FeatureShape);

    internal PredictorNetwork Network => _network.Module;

    internal Device DeviceInfo => _network.Device;

    internal object Gate => _network.Gate;

    internal SharedModule<PredictorNetwork> AcquireNetwork() => _network.Acquire();

    /// <summary>Default output column names: <c>L{layer}.{arch.Id}.Score</c> and <c>.PredictedLabel</c>.</summary>
    public static (string Score, string PredictedLabel) DefaultColumnNames(int layer, PredictorArchitecture architecture)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        var prefix = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"L{layer}.{architecture.Id}");
        return (prefix + ".Score", prefix + ".PredictedLabel");
    }

    // 1.2: the features' shape
    private static VersionInfo GetVersionInfo() => ModelStreamVersion("GATIPRED", 0x00010002, LoaderSignature);

    /// <summary>Log-probabilities and predicted keys for <paramref name="count"/> rows of a feature buffer.</summary>
    internal void Predict(float[] features, int count, float[]? logProbabilities, uint[]? predicted)
    {
        ThrowIfDisposed();
        _network.Forward(features, count, [InputSize], (network, x) =>
        {
            var output = network.forward(x);
            if (logProbabilities is not null) TensorOutputs.CopyRows(output, logProbabilities, count, ClassNames.Count);
            if (predicted is not null) TensorOutputs.ArgmaxKeys(output, predicted, count);
        });
    }

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) =>
        new ClassScoreMapper(inputSchema, FeatureColumnName, InputSize,
        $"the layer-{Layer} {Architecture} predictor", BatchSize, ClassNames, ScoreColumnName, PredictedLabelColumnName, null, Predict);

    private protected override VersionInfo ModelVersion => GetVersionInfo();

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        // *** Binary format (docs/model-format.md) ***
        // int32 layer; byte kind; int32 hidden, pool size, kernel, stride; int32 input size; class names;
        // string feature, score, predicted-label columns; int32 batch size; int32 best epoch, epochs run;
        // double validation agreement; string weights key (GatiShared/); (1.2) bool + int32 C, H, W: the features' shape
        var writer = ctx.Writer;
        writer.Write(Layer);
        WriteArchitecture(writer, Architecture);
        writer.Write(InputSize);
        ModelText.WriteStrings(writer, ClassNames);
        writer.Write(FeatureColumnName);
        writer.Write(ScoreColumnName);
        writer.Write(PredictedLabelColumnName);
        writer.Write(BatchSize);
        WriteSummary(writer, Summary);
        writer.Write(SharedWeights.Save(ctx, _network));
        writer.Write(FeatureShape is not null);
        if (FeatureShape is { } shape) WriteFeatureShape(writer, shape);
    }

    /// <summary>int32 best epoch, int32 epochs run, double validation agreement.</summary>
    internal static void WriteSummary(BinaryWriter writer, PredictorTrainingSummary summary)
    {
        writer.Write(summary.BestEpoch);
        writer.Write(summary.EpochsRun);
        writer.Write(summary.ValidationAgreement);
    }

    internal static PredictorTrainingSummary ReadSummary(BinaryReader reader) => new(reader.ReadInt32(), reader.ReadInt32(), reader.ReadDouble());

    /// <summary>int32 C, H, W of the features a predictor reads.</summary>
    internal static void WriteFeatureShape(BinaryWriter writer, TensorShape shape)
    {
        writer.Write(shape.Channels);
        writer.Write(shape.Height);
        writer.Write(shape.Width);
    }

    internal static TensorShape ReadFeatureShape(BinaryReader reader) =>
        new(ModelText.ReadInt(reader, "feature channels", 1, 1 << 24), ModelText.ReadInt(reader, "feature height", 1, 1 << 16),
            ModelText.ReadInt(reader, "feature width", 1, 1 << 16));

    internal static void WriteArchitecture(BinaryWriter writer, PredictorArchitecture architecture)
    {
        writer.Write((byte)architecture.Kind);
        writer.Write(architecture.Hidden);
        writer.Write(architecture.PoolSize);
        writer.Write(architecture.Kernel);
        writer.Write(architecture.Stride);
    }

    internal static PredictorArchitecture ReadArchitecture(BinaryReader reader)
    {
        var kind = (PredictorKind)reader.ReadByte();
        var hidden = reader.ReadInt32();
        var pool = reader.ReadInt32();
        var kernel = reader.ReadInt32();
        var stride = reader.ReadInt32();
        try
        {
            return kind switch
            {
                PredictorKind.FC => PredictorArchitecture.FC(hidden),
                PredictorKind.Pool => PredictorArchitecture.Pool(pool, hidden),
                PredictorKind.Conv => PredictorArchitecture.Conv(kernel, stride),
                PredictorKind.Grid => PredictorArchitecture.Grid(pool, hidden),
                _ => throw new InvalidDataException($"Corrupt model: unknown predictor kind {(int)kind}."),
            };
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
        }
    }

    private static PredictorTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var reader = ctx.Reader;
        var layer = ModelText.ReadInt(reader, "layer", 1, 100_000);
        var architecture = ReadArchitecture(reader);
        var inputSize = ModelText.ReadInt(reader, "input size", 1, int.MaxValue);
        var classNames = ModelText.ReadStrings(reader, "class name", 100_000);
        var feature = reader.ReadString();
        var score = reader.ReadString();
        var predicted = reader.ReadString();
        var batchSize = ModelText.ReadInt(reader, "batch size", 1, 1 << 20);
        var summary = ReadSummary(reader);
        var weights = reader.ReadString();
        TensorShape? shape = null;
        if (ctx.Header.ModelVerWritten >= 0x00010002 && reader.ReadBoolean())
        {
            shape = ReadFeatureShape(reader);
            if (shape.Value.Size != inputSize) throw new InvalidDataException($"Corrupt model: feature shape {shape} for {inputSize} features.");
        }
        TorchRuntime.EnsureInitialized();
        var network = LoadNetwork(ctx, weights, layer, architecture, inputSize, classNames.Length, shape, () => DeviceOptions.ResolveForLoadedModel(env));
        return new PredictorTransformer(env, network, layer, classNames, feature, score, predicted, batchSize, summary);
    }

    /// <summary>
    /// A stored layer-<paramref name="layer"/> predictor's network, from the zip's shared weights (built on first use);
    /// sizes its architecture cannot take mean a corrupt model.
    /// </summary>
    internal static SharedModule<PredictorNetwork> LoadNetwork(ModelLoadContext ctx, string key, int layer, PredictorArchitecture architecture, int inputSize,
        int classes, TensorShape? shape, Func<Device> device)
    {
        long parameters;
        try
        {
            parameters = architecture.ParameterCount(inputSize, classes, shape);
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
        }
        return SharedWeights.Load(ctx, key, () => PredictorNetwork.Create(architecture, inputSize, classes, shape), device,
            $"layer-{layer} {architecture} predictor", parameters);
    }

    private protected override void DisposeCore() => _network.Release();
}
