using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(LearnedCachesTransformer), null, typeof(SignatureLoadModel), "Gati Learned Caches", LearnedCachesTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// A base ResNet with learned caches on some of its layers, as an ML.NET transformer. <see cref="ITransformer.Transform"/>
/// runs the real early-exit engine batch by batch (rows that hit a cache skip the remaining blocks) and adds the
/// answer, its probabilities and the exit layer. Build an <see cref="EarlyExitPredictionEngine{TInput, TOutput}"/>
/// from it (or from a chain holding it) for serving.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type</description></listheader>
/// <item><term>input: Image</term><description>Vector&lt;Single, C, H, W&gt;</description></item>
/// <item><term>output: EarlyExitScore</term><description>Vector&lt;Single, k&gt; probabilities (SlotNames)</description></item>
/// <item><term>output: EarlyExitPredictedLabel</term><description>Key&lt;UInt32, k&gt; (KeyValues)</description></item>
/// <item><term>output: ExitLayer</term><description>Int32: the layer whose cache answered, 0 = the full model</description></item>
/// </list>
/// Shares the base network with the base-model transformer of its chain (stored once in a saved zip).
/// </remarks>
public sealed class LearnedCachesTransformer : GatiTransformerBase, IBaseModelHolder
{
    internal const string LoaderSignature = "GatiLearnedCaches";

    private readonly SharedModule<ResNet> _base;
    private readonly LearnedCache[] _caches;
    private readonly object _engineGate = new();
    private EarlyExitEngine? _engine;
    private IReadOnlyList<Onnx.OnnxSegment>? _storedSegments;

    internal LearnedCachesTransformer(IHostEnvironment environment, SharedModule<ResNet> baseNetwork, IReadOnlyList<string> classNames, string imageColumnName,
        IReadOnlyList<LearnedCache> caches, Columns columns, int batchSize, ChannelNormalization? inputNormalization)
        : base(environment, nameof(LearnedCachesTransformer))
    {
        _base = baseNetwork;
        InputNormalization = inputNormalization;
        _caches = caches.OrderBy(c => c.Layer).ToArray();
        ClassNames = classNames.ToArray();
        ImageColumnName = imageColumnName;
        OutputColumns = columns;
        BatchSize = batchSize;
        _base.Module.eval();
        foreach (var cache in _caches)
        {
            cache.Predictor.Module.eval();
            cache.Selector.Module.eval();
        }
    }

    /// <summary>Names of the output columns.</summary>
    /// <param name="Score">Probabilities.</param>
    /// <param name="PredictedLabel">Predicted class key.</param>
    /// <param name="ExitLayer">Exit layer (0 = full model).</param>
    public sealed record Columns(string Score = "EarlyExitScore", string PredictedLabel = "EarlyExitPredictedLabel", string ExitLayer = "ExitLayer");

    /// <summary>The caches, by layer.</summary>
    public IReadOnlyList<LearnedCache> Caches => _caches;

    /// <summary>The base network's configuration.</summary>
    public ResNetConfig Config => _base.Module.Config;

    /// <summary>The normalisation of the base model's training images, when known (for preparing raw images).</summary>
    public ChannelNormalization? InputNormalization { get; }

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>The image column read.</summary>
    public string ImageColumnName { get; }

    /// <summary>Output column names.</summary>
    public Columns OutputColumns { get; }

    /// <summary>Rows per engine call in <see cref="ITransformer.Transform"/>.</summary>
    public int BatchSize { get; }

    /// <summary>The device the networks run on.</summary>
    public string Device => _base.Device.ToString();

    /// <summary>True when at most one cache sits on each layer (required by the engine; see <c>CacheOptimizer</c>).</summary>
    public bool OneCachePerLayer => _caches.Select(c => c.Layer).Distinct().Count() == _caches.Length;

    BaseNetwork IBaseModelHolder.Base => new(_base, ClassNames, ImageColumnName, InputNormalization);

    internal SharedModule<ResNet> BaseNetwork => _base;

    internal EarlyExitEngine Engine
    {
        get
        {
            // Created and disposed under one lock: an engine made by a cursor while the transformer is being disposed
            // is either refused or disposed with it, never left holding the networks.
            lock (_engineGate)
            {
                ThrowIfDisposed();
                // Transform scores with the trained networks themselves; serving engines choose their backend.
                return _engine ??= EarlyExitEngine.Create(_base, _caches, ClassNames, InputNormalization,
                    new EarlyExitEngineOptions { Backend = ExecutionBackend.TorchSharp });
            }
        }
    }

    /// <summary>A transformer over the same base network with another set of caches (e.g. the optimizer's choice).</summary>
    internal LearnedCachesTransformer WithCaches(IEnumerable<LearnedCache> caches) =>
        new(Host, _base.Acquire(), ClassNames, ImageColumnName, caches.Select(c => c.Share()).ToArray(), OutputColumns, BatchSize, InputNormalization);

    /// <summary>
    /// The same caches re-thresholded from their calibration curves for another exit precision target (no data needed).
    /// </summary>
    /// <param name="targetPrecision">Required precision of exits, e.g. 0.999.</param>
    public LearnedCachesTransformer WithPrecisionTarget(double targetPrecision) =>
        new(Host, _base.Acquire(), ClassNames, ImageColumnName, _caches.Select(c => c.WithCalibration(c.Calibration.ForPrecision(targetPrecision))).ToArray(),
            OutputColumns, BatchSize, InputNormalization);

    private static VersionInfo GetVersionInfo() => new(
        modelSignature: "GATICACH",
        verWrittenCur: 0x00010002,   // 1.2: ONNX segment graphs for the ONNX Runtime backend
        verReadableCur: 0x00010002,
        verWeCanReadBack: 0x00010001,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(LearnedCachesTransformer).Assembly.FullName);

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) => new Mapper(this, inputSchema);

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        // base config; class names; image column; 3 output column names; int32 batch size; string base weights key;
        // input normalisation (ModelText.WriteNormalization);
        // int32 cache count, per cache: int32 layer, predictor architecture, int32 predictor input size,
        // int32 best epoch, int32 epochs run, double agreement, string predictor weights key, selector architecture,
        // calibration (with its curve), string selector weights key
        var writer = ctx.Writer;
        ResNetConfigFormat.Write(writer, Config);
        ModelText.WriteStrings(writer, ClassNames);
        writer.Write(ImageColumnName);
        writer.Write(OutputColumns.Score);
        writer.Write(OutputColumns.PredictedLabel);
        writer.Write(OutputColumns.ExitLayer);
        writer.Write(BatchSize);
        using (_base.Use()) writer.Write(SharedWeights.Save(ctx, _base.Module));
        ModelText.WriteNormalization(writer, InputNormalization);
        writer.Write(_caches.Length);
        foreach (var cache in _caches)
        {
            writer.Write(cache.Layer);
            PredictorTransformer.WriteArchitecture(writer, cache.PredictorArchitecture);
            writer.Write(cache.Predictor.Module.InputSize);
            writer.Write(cache.PredictorSummary.BestEpoch);
            writer.Write(cache.PredictorSummary.EpochsRun);
            writer.Write(cache.PredictorSummary.ValidationAgreement);
            using (cache.Predictor.Use()) writer.Write(SharedWeights.Save(ctx, cache.Predictor.Module));
            SelectorTransformer.WriteArchitecture(writer, cache.SelectorArchitecture);
            SelectorTransformer.WriteCalibration(writer, cache.Calibration);
            using (cache.Selector.Use()) writer.Write(SharedWeights.Save(ctx, cache.Selector.Module));
        }

        // 1.2: the early-exit model as ONNX segment graphs (docs/model-format.md#onnx-segments), when it is servable
        // (one cache per layer): int32 segment count (0 otherwise), per segment int32 first layer, int32 last layer,
        // bool final, and the graph as binary stream OnnxSegment{i}.
        var segments = OneCachePerLayer ? OnnxSegments() : [];
        writer.Write(segments.Count);
        for (var i = 0; i < segments.Count; i++)
        {
            var segment = segments[i];
            writer.Write(segment.FirstLayer);
            writer.Write(segment.LastLayer);
            writer.Write(segment.IsFinal);
            ctx.SaveBinaryStream(SegmentStream(i), w => w.Write(segment.Model));
        }
    }

    private static string SegmentStream(int index) => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"OnnxSegment{index}");

    /// <summary>
    /// The ONNX segment graphs of this model: as loaded from its zip when it has them, else exported from the
    /// networks now.
    /// </summary>
    internal IReadOnlyList<Onnx.OnnxSegment> OnnxSegments()
    {
        if (_storedSegments is { } stored) return stored;
        using (_base.Use()) return Onnx.EarlyExitOnnx.Segments(_base.Module, _caches);
    }

    /// <summary>The whole early exit as one graph for one input at a time (<see cref="Onnx.EarlyExitSingleGraph"/>).</summary>
    internal byte[] OnnxSingleGraph()
    {
        using (_base.Use()) return Onnx.EarlyExitSingleGraph.Build(_base.Module, _caches);
    }

    private static LearnedCachesTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var reader = ctx.Reader;
        var config = ResNetConfigFormat.Read(reader);
        var classNames = ModelText.ReadStrings(reader, "class name", 100_000);
        if (classNames.Length != config.ClassCount) throw new InvalidDataException($"Corrupt model: {classNames.Length} class names for {config.ClassCount} classes.");
        var image = reader.ReadString();
        var columns = new Columns(reader.ReadString(), reader.ReadString(), reader.ReadString());
        var batchSize = ModelText.ReadInt(reader, "batch size", 1, 1 << 20);
        var baseKey = reader.ReadString();
        var normalization = ModelText.ReadNormalization(reader);
        TorchRuntime.EnsureInitialized();
        var device = DeviceOptions.ResolveForLoadedModel(env);
        var baseNetwork = SharedWeights.Load(ctx, baseKey, () => new ResNet(config), device, $"{config.Architecture} base model",
            ResNetConfigFormat.ParameterCount(config));
        var caches = new List<LearnedCache>();
        try
        {
            var count = ModelText.ReadInt(reader, "cache count", 0, 10_000);
            for (var i = 0; i < count; i++)
            {
                var layer = ModelText.ReadInt(reader, "cache layer", 1, 1000);
                var predictorArchitecture = PredictorTransformer.ReadArchitecture(reader);
                var inputSize = ModelText.ReadInt(reader, "predictor input size", 1, int.MaxValue);
                var summary = new PredictorTrainingSummary(reader.ReadInt32(), reader.ReadInt32(), reader.ReadDouble());
                var predictorKey = reader.ReadString();
                var selectorArchitecture = SelectorTransformer.ReadArchitecture(reader);
                var calibration = SelectorTransformer.ReadCalibration(reader);
                var selectorKey = reader.ReadString();
                var predictor = SharedWeights.Load(ctx, predictorKey, () => PredictorNetwork.Create(predictorArchitecture, inputSize, config.ClassCount), device,
                    $"layer-{layer} {predictorArchitecture} predictor", predictorArchitecture.ParameterCount(inputSize, config.ClassCount));
                SharedModule<SelectorNetwork> selector;
                try
                {
                    selector = SharedWeights.Load(ctx, selectorKey, () => new SelectorNetwork(selectorArchitecture, config.ClassCount), device, $"layer-{layer} selector",
                        selectorArchitecture.ParameterCount(config.ClassCount));
                }
                catch
                {
                    predictor.Release();
                    throw;
                }
                caches.Add(new LearnedCache(layer, predictor, selector, calibration, summary));
            }
            var transformer = new LearnedCachesTransformer(env, baseNetwork, classNames, image, caches, columns, batchSize, normalization);
            if (ctx.Header.ModelVerWritten >= 0x00010002)
                transformer._storedSegments = ReadSegments(ctx, reader, transformer);
            return transformer;
        }
        catch
        {
            foreach (var cache in caches) cache.Dispose();
            baseNetwork.Release();
            throw;
        }
    }

    private static List<Onnx.OnnxSegment>? ReadSegments(ModelLoadContext ctx, BinaryReader reader, LearnedCachesTransformer transformer)
    {
        var count = ModelText.ReadInt(reader, "ONNX segment count", 0, 10_001);
        if (count == 0) return null;
        if (count != transformer._caches.Length + 1)
            throw new InvalidDataException($"Corrupt model: {count} ONNX segments for {transformer._caches.Length} caches (expected {transformer._caches.Length + 1}).");
        var segments = new List<Onnx.OnnxSegment>(count);
        var expectedFirst = 0;
        for (var i = 0; i < count; i++)
        {
            var first = reader.ReadInt32();
            var last = reader.ReadInt32();
            var final = reader.ReadBoolean();
            var expectedLast = i < transformer._caches.Length ? transformer._caches[i].Layer : ResNetSpec.For(transformer.Config.Architecture).LayerCount;
            if (first != expectedFirst || last != expectedLast || final != (i == count - 1))
                throw new InvalidDataException($"Corrupt model: ONNX segment {i} covers layers {first}..{last}, expected {expectedFirst}..{expectedLast}.");
            byte[]? bytes = null;
            if (!ctx.TryLoadBinaryStream(SegmentStream(i), r => bytes = r.ReadBytes(checked((int)(r.BaseStream.Length - r.BaseStream.Position)))) || bytes is not { Length: > 0 })
                throw new InvalidDataException($"Corrupt model: ONNX segment {i} ({SegmentStream(i)}) is missing from the zip.");
            segments.Add(new Onnx.OnnxSegment(first, last, final, bytes));
            expectedFirst = last + 1;
        }
        return segments;
    }

    private protected override void DisposeCore()
    {
        EarlyExitEngine? engine;
        lock (_engineGate)
        {
            engine = _engine;
            _engine = null;
        }
        // Waits for the engine's calls in flight (a cursor's batch) before the networks are released.
        engine?.Dispose();
        foreach (var cache in _caches) cache.Dispose();
        _base.Release();
    }

    private sealed class Mapper : BatchMapper
    {
        private readonly LearnedCachesTransformer _parent;

        public Mapper(LearnedCachesTransformer parent, DataViewSchema inputSchema)
            : base(inputSchema, [parent.ImageColumnName], parent.BatchSize)
        {
            _parent = parent;
            if (!parent.OneCachePerLayer)
                throw new InvalidOperationException("This transformer holds several candidate caches on one layer: choose one per layer first (CacheOptimizer / gati optimize).");
            CheckInputSize(0, parent.Config.InputShape.Size, $"the base {parent.Config.Architecture} ({parent.Config.InputShape} images)");
            var k = parent.Config.ClassCount;
            Outputs =
            [
                OutputColumn.Vector(parent.OutputColumns.Score, k, Annotations.SlotNames(parent.ClassNames)),
                OutputColumn.Key(parent.OutputColumns.PredictedLabel, k, Annotations.KeyValues(parent.ClassNames)),
                OutputColumn.Int32(parent.OutputColumns.ExitLayer),
            ];
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }

        public override void Map(float[][] inputs, int count, Array?[] outputs, bool[] active)
        {
            var batch = _parent.Engine.Run(inputs[0], count);
            var k = _parent.Config.ClassCount;
            if (outputs[0] is float[] scores) batch.Probabilities.AsSpan(0, count * k).CopyTo(scores);
            if (outputs[1] is uint[] labels)
                for (var i = 0; i < count; i++) labels[i] = (uint)batch.PredictedClass[i] + 1;
            if (outputs[2] is int[] exits) batch.ExitLayer.AsSpan(0, count).CopyTo(exits);
        }
    }
}
