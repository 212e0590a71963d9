using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Policy;
using Gati.MLNet.Torch;
using static TorchSharp.torch;

namespace Gati.MLNet.Inference;

/// <summary>
/// A learned cache on one cut point (layer) of the base model: a predictor (the early answer) and a selector with its
/// calibrated exit threshold (whether to trust it), with the held-out figures they were chosen by. Its serving form is
/// one small ONNX graph (features → log-probabilities and P(hit)); the TorchSharp networks exist for training,
/// fine-tuning and the TorchSharp backend, and a cache loaded from a zip builds them only when one of those asks.
/// </summary>
public sealed class LearnedCache : IDisposable
{
    private readonly object _graphGate = new();
    private byte[]? _graph;
    private int _disposed;

    internal LearnedCache(int layer, TensorShape featureShape, SharedModule<PredictorNetwork> predictor, SharedModule<SelectorNetwork> selector,
        ExitCalibration calibration, PredictorTrainingSummary predictorSummary, byte[]? graph = null)
        : this(layer, featureShape, predictor.Module.Architecture, predictor.Module.Classes, selector.Module.Architecture, predictor, selector, calibration,
            predictorSummary, graph)
    {
        if (predictor.Module.InputSize != featureShape.Size)
            throw new ArgumentException($"The layer-{layer} predictor reads {predictor.Module.InputSize} values; cut point {layer} has {featureShape} = {featureShape.Size}.");
    }

    /// <summary>A cache whose networks may not be built yet (loaded from a zip): everything serving needs is given.</summary>
    internal LearnedCache(int layer, TensorShape featureShape, PredictorArchitecture predictorArchitecture, int classes, SelectorArchitecture selectorArchitecture,
        SharedModule<PredictorNetwork> predictor, SharedModule<SelectorNetwork> selector, ExitCalibration calibration, PredictorTrainingSummary predictorSummary,
        byte[]? graph)
    {
        Layer = layer;
        FeatureShape = featureShape;
        PredictorArchitecture = predictorArchitecture;
        SelectorArchitecture = selectorArchitecture;
        Classes = classes;
        Predictor = predictor;
        Selector = selector;
        Calibration = calibration;
        PredictorSummary = predictorSummary;
        _graph = graph;
    }

    /// <summary>The cut point (layer) the cache reads: for Gati's ResNets, the residual block whose output it is.</summary>
    public int Layer { get; }

    /// <summary>[C, H, W] of the features the cache reads.</summary>
    public TensorShape FeatureShape { get; }

    /// <summary>Values per row the cache reads.</summary>
    public int InputSize => FeatureShape.Size;

    /// <summary>
    /// The shape of the features after the predictor's parameter-free first step (Grid's cells, Pool's 1-D pooling;
    /// <see cref="FeatureShape"/> itself for FC and Conv): a predictor of the same weights reads these as it reads the full
    /// features, so whoever keeps features to train the predictor on (online updates) keeps these.
    /// </summary>
    internal TensorShape ReducedFeatureShape => ReducesFeatures ? PredictorArchitecture.Reduction.Apply(FeatureShape) : FeatureShape;

    /// <summary>Whether the predictor's first step reduces this cache's features (Grid, Pool smaller than the map).</summary>
    internal bool ReducesFeatures => PredictorArchitecture.Reduction.Reduces(FeatureShape);

    /// <summary>
    /// One row of full features reduced to <see cref="ReducedFeatureShape"/> in managed code, as a copy that may live long
    /// (pinned, as the shadow window keeps its rows): what the predictor's first step computes from them, up to float
    /// rounding; a plain copy where the predictor reads them as they are.
    /// </summary>
    internal float[] ReduceRow(ReadOnlySpan<float> features)
    {
        var reduced = GC.AllocateUninitializedArray<float>(ReducedFeatureShape.Size, pinned: true);
        if (ReducesFeatures) PredictorArchitecture.Reduction.Apply(features, FeatureShape, reduced);
        else features.CopyTo(reduced);
        return reduced;
    }

    /// <summary>Classes predicted.</summary>
    public int Classes { get; }

    /// <summary>The predictor's architecture.</summary>
    public PredictorArchitecture PredictorArchitecture { get; }

    /// <summary>The selector's architecture.</summary>
    public SelectorArchitecture SelectorArchitecture { get; }

    /// <summary>Exit threshold and its held-out precision, recall and hit rate.</summary>
    public ExitCalibration Calibration { get; }

    /// <summary>The predictor's training figures.</summary>
    public PredictorTrainingSummary PredictorSummary { get; }

    /// <summary>Parameters of predictor and selector.</summary>
    public long ParameterCount => PredictorArchitecture.ParameterCount(InputSize, Classes, FeatureShape) + SelectorArchitecture.ParameterCount(Classes);

    /// <summary>Memory of predictor and selector parameters, in bytes (float32).</summary>
    public long ParameterBytes => ParameterCount * sizeof(float);

    internal SharedModule<PredictorNetwork> Predictor { get; }

    internal SharedModule<SelectorNetwork> Selector { get; }

    /// <summary>
    /// The cache as an ONNX graph: input <c>Features</c> [N, C, H, W] (or [N, D] for vector features), outputs
    /// <c>LogProbabilities</c> [N, k] and <c>HitProbability</c> [N]. Stored in model zips; exported from the networks
    /// when the cache was made in this process.
    /// </summary>
    internal byte[] Graph
    {
        get
        {
            lock (_graphGate)
            {
                if (_graph is not null) return _graph;
                using (Predictor.Use())
                using (Selector.Use())
                    _graph = CacheOnnx.Graph(Predictor.Module, Selector.Module, FeatureShape);
                return _graph;
            }
        }
    }

    /// <summary>
    /// The cache lookup on a batch of features [N, D]: the predictor's log-probabilities and whether the selector's P(hit)
    /// reaches the threshold ([N] bools). The TorchSharp backend runs exactly this, and <see cref="Training.CacheMeasurements"/>
    /// counts exactly this.
    /// </summary>
    internal (Tensor LogProbabilities, Tensor Hits) Lookup(Tensor features)
    {
        var (logProbabilities, _, hits) = Lookup(features, Calibration.Threshold);
        return (logProbabilities, hits);
    }

    /// <summary>The lookup against another threshold (a serving engine's live one), with the selector's P(hit) per row.</summary>
    internal (Tensor LogProbabilities, Tensor HitProbability, Tensor Hits) Lookup(Tensor features, double threshold)
    {
        var logProbabilities = Predictor.Module.forward(features);
        var hitProbability = Selector.Module.HitProbability(logProbabilities);
        // float32 comparison, as the ONNX graphs make it (their threshold input is float32)
        return (logProbabilities, hitProbability, hitProbability.AtLeast((float)threshold));
    }

    /// <summary>Another holder of the same networks.</summary>
    internal LearnedCache Share() => WithCalibration(Calibration);

    /// <summary>The same networks with another threshold (e.g. recalibrated for another precision).</summary>
    internal LearnedCache WithCalibration(ExitCalibration calibration)
    {
        byte[]? graph;
        lock (_graphGate) graph = _graph;
        return new(Layer, FeatureShape, PredictorArchitecture, Classes, SelectorArchitecture, Predictor.Acquire(), Selector.Acquire(), calibration, PredictorSummary, graph);
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"layer {Layer} {PredictorArchitecture} + selector {SelectorArchitecture}, threshold {Calibration.Threshold:G4} (held-out precision {Calibration.Precision:P2}, hit rate {Calibration.HitRate:P1})";

    /// <summary>Releases this holder's share of the networks.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Predictor.Release();
        Selector.Release();
    }
}
