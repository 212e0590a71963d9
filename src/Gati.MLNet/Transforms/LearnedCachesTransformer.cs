using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(LearnedCachesTransformer), null, typeof(SignatureLoadModel), "Gati Learned Caches", LearnedCachesTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// A base model (a Gati ResNet or an imported network) with learned caches on some of its cut points, as an ML.NET
/// transformer. <see cref="ITransformer.Transform"/> runs the real early-exit engine batch by batch (rows that hit a cache
/// skip the rest of the network) and adds the answer, its probabilities and the exit layer. Build an
/// <see cref="EarlyExitPredictionEngine{TInput, TOutput}"/> from it (or from a chain holding it) for serving.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type</description></listheader>
/// <item><term>input: Image</term><description>Vector&lt;Single, C, H, W&gt; (the base model's input column)</description></item>
/// <item><term>output: EarlyExitScore</term><description>Vector&lt;Single, k&gt; probabilities (SlotNames)</description></item>
/// <item><term>output: EarlyExitPredictedLabel</term><description>Key&lt;UInt32, k&gt; (KeyValues)</description></item>
/// <item><term>output: ExitLayer</term><description>Int32: the cut point whose cache answered, 0 = the full model</description></item>
/// </list>
/// Shares the base model with the base-model transformer of its chain (stored once in a saved zip). A saved model holds
/// the base model's ONNX graph and each cache's: what ONNX Runtime serves, without TorchSharp (docs/model-format.md).
/// </remarks>
public sealed class LearnedCachesTransformer : GatiTransformerBase, IBaseModelHolder
{
    internal const string LoaderSignature = "GatiLearnedCaches";

    private readonly BaseModel _base;
    private readonly LearnedCache[] _caches;
    private readonly object _engineGate = new();
    private EarlyExitEngine? _engine;

    /// <summary>Takes over the caller's hold on <paramref name="baseModel"/> and on each cache.</summary>
    internal LearnedCachesTransformer(IHostEnvironment environment, BaseModel baseModel, string imageColumnName, IReadOnlyList<LearnedCache> caches, Columns columns,
        int batchSize)
        : base(environment, nameof(LearnedCachesTransformer))
    {
        _base = baseModel;
        _caches = caches.OrderBy(c => c.Layer).ToArray();
        foreach (var cache in _caches) baseModel.CutPoint(cache.Layer);
        ImageColumnName = imageColumnName;
        OutputColumns = columns;
        BatchSize = batchSize;
    }

    /// <summary>Names of the output columns.</summary>
    /// <param name="Score">Probabilities.</param>
    /// <param name="PredictedLabel">Predicted class key.</param>
    /// <param name="ExitLayer">Exit layer (0 = full model).</param>
    public sealed record Columns(string Score = "EarlyExitScore", string PredictedLabel = "EarlyExitPredictedLabel", string ExitLayer = "ExitLayer");

    /// <summary>The caches, by cut point.</summary>
    public IReadOnlyList<LearnedCache> Caches => _caches;

    /// <summary>The base model the caches attach to.</summary>
    public BaseModel BaseModel => _base;

    /// <summary>The base network's configuration, for a Gati ResNet base model.</summary>
    /// <exception cref="InvalidOperationException">The base model is an imported network.</exception>
    public ResNetConfig Config => _base is ResNetBaseModel resnet ? resnet.Config
        : throw new InvalidOperationException($"The base model is {_base.Description}, not a Gati ResNet: use BaseModel.");

    /// <summary>The normalisation of the base model's input images, when known (for preparing raw images).</summary>
    public ChannelNormalization? InputNormalization => _base.InputNormalization;

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames => _base.ClassNames;

    /// <summary>The image column read.</summary>
    public string ImageColumnName { get; }

    /// <summary>Output column names.</summary>
    public Columns OutputColumns { get; }

    /// <summary>Rows per engine call in <see cref="ITransformer.Transform"/>.</summary>
    public int BatchSize { get; }

    /// <summary>True when at most one cache sits on each cut point (required by the engine; see <c>CacheOptimizer</c>).</summary>
    public bool OneCachePerLayer => _caches.Select(c => c.Layer).Distinct().Count() == _caches.Length;

    BaseNetwork IBaseModelHolder.Base => new(_base, ImageColumnName);

    /// <summary>The TorchSharp network of a Gati ResNet base model (built on first use).</summary>
    internal SharedModule<ResNet> BaseNetwork => (_base as ResNetBaseModel)?.Network
        ?? throw new InvalidOperationException($"The base model is {_base.Description}, which has no TorchSharp network.");

    internal EarlyExitEngine Engine
    {
        get
        {
            // Created and disposed under one lock: an engine made by a cursor while the transformer is being disposed
            // is either refused or disposed with it, never left holding the networks.
            lock (_engineGate)
            {
                ThrowIfDisposed();
                // Transform scores a Gati ResNet with the trained networks themselves; an imported network has only its ONNX form.
                return _engine ??= EarlyExitEngine.Create(_base, _caches,
                    new EarlyExitEngineOptions { Backend = Inference.Backends.ExecutionBackends.Native(_base).Kind, Device = "cpu" });
            }
        }
    }

    /// <summary>The ONNX segment graphs of this model: cut out of the base model's graph, each cache's graph fused in.</summary>
    internal IReadOnlyList<OnnxSegment> OnnxSegments() =>
        EarlyExitOnnx.Segments(_base.Graph, _caches.Select(c => CacheGraph.Parse(c.Layer, c.Graph)).ToArray());

    /// <summary>The whole early exit as one graph for one input at a time (<see cref="EarlyExitSingleGraph"/>).</summary>
    internal byte[] OnnxSingleGraph() =>
        EarlyExitSingleGraph.Build(_base.Graph, _caches.Select(c => CacheGraph.Parse(c.Layer, c.Graph)).ToArray());

    /// <summary>A transformer over the same base model with another set of caches (e.g. the optimizer's choice).</summary>
    internal LearnedCachesTransformer WithCaches(IEnumerable<LearnedCache> caches) =>
        new(Host, _base.Acquire(), ImageColumnName, caches.Select(c => c.Share()).ToArray(), OutputColumns, BatchSize);

    /// <summary>
    /// The same caches re-thresholded from their calibration curves for another exit precision target (no data needed).
    /// </summary>
    /// <param name="targetPrecision">Required precision of exits, e.g. 0.999.</param>
    public LearnedCachesTransformer WithPrecisionTarget(double targetPrecision) =>
        new(Host, _base.Acquire(), ImageColumnName, _caches.Select(c => c.WithCalibration(c.Calibration.ForPrecision(targetPrecision))).ToArray(), OutputColumns, BatchSize);

    /// <summary>
    /// Candidates for the cache optimizer: every cache as fitted, plus, for each of <paramref name="precisionTargets"/>, the
    /// same networks re-thresholded from the calibration curve for that exit precision (data-free, like
    /// <see cref="WithPrecisionTarget"/>). A threshold already present on the cache, or one that never exits, is not
    /// repeated. The optimizer then spends the agreement budget where exits save most (a looser threshold on an early cut
    /// point, a stricter one later) instead of every cache holding one precision. Several candidates share a layer: choose
    /// one per layer (<see cref="Training.CacheOptimizer.Choose(Training.CacheMeasurements, Training.CacheConstraints)"/>) before serving.
    /// </summary>
    /// <param name="precisionTargets">Exit precisions to re-threshold for, each in (0, 1], e.g. 0.98, 0.99, 0.998.</param>
    public LearnedCachesTransformer WithThresholdVariants(IEnumerable<double> precisionTargets)
    {
        ArgumentNullException.ThrowIfNull(precisionTargets);
        var targets = precisionTargets.Distinct().Order().ToArray();
        foreach (var t in targets)
            if (t is <= 0 or > 1 || double.IsNaN(t)) throw new ArgumentOutOfRangeException(nameof(precisionTargets), t, "Each precision target must be in (0, 1].");
        var caches = new List<LearnedCache>();
        try
        {
            foreach (var cache in _caches)
            {
                caches.Add(cache.Share());
                if (cache.Calibration.Curve.Count == 0) continue;
                var thresholds = new HashSet<float> { cache.Calibration.Threshold };
                foreach (var target in targets)
                {
                    var calibration = cache.Calibration.ForPrecision(target);
                    if (calibration.NeverExits || !thresholds.Add(calibration.Threshold)) continue;
                    caches.Add(cache.WithCalibration(calibration));
                }
            }
            return new(Host, _base.Acquire(), ImageColumnName, caches.ToArray(), OutputColumns, BatchSize);
        }
        catch
        {
            foreach (var cache in caches) cache.Dispose();
            throw;
        }
    }

    // 1.2: ONNX segment graphs; 1.3: any base model, the base and cache graphs (segments are built from them)
    private static VersionInfo GetVersionInfo() => ModelStreamVersion("GATICACH", 0x00010003, LoaderSignature);

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) => new Mapper(this, inputSchema);

    private protected override VersionInfo ModelVersion => GetVersionInfo();

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        // 1.3: base model block (BaseModelFormat); image column; 3 output column names; int32 batch size;
        // int32 cache count, per cache: int32 layer, predictor architecture, int32 feature channels, height, width,
        // int32 best epoch, int32 epochs run, double agreement, string predictor weights key, selector architecture,
        // calibration (with its curve), string selector weights key, string cache graph key (GatiShared/<key>.onnx)
        var writer = ctx.Writer;
        BaseModelFormat.Write(ctx, _base);
        writer.Write(ImageColumnName);
        writer.Write(OutputColumns.Score);
        writer.Write(OutputColumns.PredictedLabel);
        writer.Write(OutputColumns.ExitLayer);
        writer.Write(BatchSize);
        writer.Write(_caches.Length);
        foreach (var cache in _caches)
        {
            writer.Write(cache.Layer);
            PredictorTransformer.WriteArchitecture(writer, cache.PredictorArchitecture);
            PredictorTransformer.WriteFeatureShape(writer, cache.FeatureShape);
            PredictorTransformer.WriteSummary(writer, cache.PredictorSummary);
            writer.Write(SharedWeights.Save(ctx, cache.Predictor));
            SelectorTransformer.WriteArchitecture(writer, cache.SelectorArchitecture);
            SelectorTransformer.WriteCalibration(writer, cache.Calibration);
            writer.Write(SharedWeights.Save(ctx, cache.Selector));
            writer.Write(SharedWeights.SaveBytes(ctx, cache.Graph, "onnx"));
        }
    }

    private static LearnedCachesTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var reader = ctx.Reader;
        var version = ctx.Header.ModelVerWritten;
        BaseModel model;
        string image;
        Columns columns;
        int batchSize;
        if (version >= 0x00010003)
        {
            model = BaseModelFormat.Read(ctx, env);
            try
            {
                image = reader.ReadString();
                columns = new Columns(reader.ReadString(), reader.ReadString(), reader.ReadString());
                batchSize = ModelText.ReadInt(reader, "batch size", 1, 1 << 20);
            }
            catch
            {
                model.Release();
                throw;
            }
        }
        else
        {
            // 1.1-1.2: a Gati ResNet's configuration, class names, columns, batch size, weights key, normalisation.
            var (config, classNames) = ResNetConfigFormat.ReadWithClassNames(reader);
            image = reader.ReadString();
            columns = new Columns(reader.ReadString(), reader.ReadString(), reader.ReadString());
            batchSize = ModelText.ReadInt(reader, "batch size", 1, 1 << 20);
            var baseKey = reader.ReadString();
            var normalization = ModelText.ReadNormalization(reader);
            model = BaseModelFormat.ReadResNet(ctx, env, config, baseKey, "", classNames, normalization);
        }
        var caches = new List<LearnedCache>();
        try
        {
            var classes = model.ClassCount;
            Func<TorchSharp.torch.Device> device = () => DeviceOptions.ResolveForLoadedModel(env);
            var count = ModelText.ReadInt(reader, "cache count", 0, 10_000);
            for (var i = 0; i < count; i++)
            {
                var layer = ModelText.ReadInt(reader, "cache layer", 1, 100_000);
                var cut = model.CutPoints.Count >= layer ? model.CutPoint(layer)
                    : throw new InvalidDataException($"Corrupt model: a cache on cut point {layer} of a base model with {model.CutPoints.Count}.");
                var predictorArchitecture = PredictorTransformer.ReadArchitecture(reader);
                TensorShape shape;
                if (version >= 0x00010003)
                {
                    shape = PredictorTransformer.ReadFeatureShape(reader);
                }
                else
                {
                    var inputSize = ModelText.ReadInt(reader, "predictor input size", 1, int.MaxValue);
                    shape = cut.Shape.Size == inputSize ? cut.Shape : new TensorShape(inputSize, 1, 1);
                }
                if (shape != cut.Shape) throw new InvalidDataException($"Corrupt model: the cache on {cut} reads {shape} features.");
                var summary = PredictorTransformer.ReadSummary(reader);
                var predictorKey = reader.ReadString();
                var selectorArchitecture = SelectorTransformer.ReadArchitecture(reader);
                var calibration = SelectorTransformer.ReadCalibration(reader);
                var selectorKey = reader.ReadString();
                var graph = version >= 0x00010003 ? SharedWeights.LoadShared(ctx, reader.ReadString(), "onnx", $"ONNX graph of the layer-{layer} cache", b => b) : null;
                var predictor = PredictorTransformer.LoadNetwork(ctx, predictorKey, layer, predictorArchitecture, shape.Size, classes, shape, device);
                SharedModule<SelectorNetwork> selector;
                try
                {
                    selector = SelectorTransformer.LoadNetwork(ctx, selectorKey, layer, selectorArchitecture, classes, device);
                }
                catch
                {
                    predictor.Release();
                    throw;
                }
                caches.Add(new LearnedCache(layer, shape, predictorArchitecture, classes, selectorArchitecture, predictor, selector, calibration, summary, graph));
            }
            if (version == 0x00010002) SkipSegments(reader);
            return new LearnedCachesTransformer(env, model, image, caches, columns, batchSize);
        }
        catch
        {
            foreach (var cache in caches) cache.Dispose();
            model.Release();
            throw;
        }
    }

    /// <summary>
    /// Version 1.2 stored ONNX segments built from the TorchSharp weights; 1.3 builds them from the base and cache graphs.
    /// Their index is read past (the segment streams themselves are separate entries of the zip).
    /// </summary>
    private static void SkipSegments(BinaryReader reader)
    {
        var count = ModelText.ReadInt(reader, "ONNX segment count", 0, 10_001);
        for (var i = 0; i < count; i++)
        {
            reader.ReadInt32();
            reader.ReadInt32();
            reader.ReadBoolean();
        }
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
            CheckInputSize(0, parent._base.InputShape.Size, $"the base model {parent._base.Description} ({parent._base.InputShape} images)");
            var k = parent._base.ClassCount;
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
            var k = _parent._base.ClassCount;
            if (outputs[0] is float[] scores) batch.Probabilities.AsSpan(0, count * k).CopyTo(scores);
            if (outputs[1] is uint[] labels)
                for (var i = 0; i < count; i++) labels[i] = (uint)batch.PredictedClass[i] + 1;
            if (outputs[2] is int[] exits) batch.ExitLayer.AsSpan(0, count).CopyTo(exits);
        }
    }
}
