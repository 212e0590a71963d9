using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Torch;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using static TorchSharp.torch;

namespace Gati.MLNet.Inference;

/// <summary>
/// A learned cache on one hidden layer: a predictor (the early answer) and a selector with its calibrated exit
/// threshold (whether to trust it), with the held-out figures they were chosen by.
/// </summary>
public sealed class LearnedCache : IDisposable
{
    private int _disposed;

    internal LearnedCache(int layer, SharedModule<PredictorNetwork> predictor, SharedModule<SelectorNetwork> selector,
        ExitCalibration calibration, PredictorTrainingSummary predictorSummary)
    {
        Layer = layer;
        Predictor = predictor;
        Selector = selector;
        Calibration = calibration;
        PredictorSummary = predictorSummary;
    }

    /// <summary>The 1-based layer the cache reads.</summary>
    public int Layer { get; }

    /// <summary>The predictor's architecture.</summary>
    public PredictorArchitecture PredictorArchitecture => Predictor.Module.Architecture;

    /// <summary>The selector's architecture.</summary>
    public SelectorArchitecture SelectorArchitecture => Selector.Module.Architecture;

    /// <summary>Exit threshold and its held-out precision, recall and hit rate.</summary>
    public ExitCalibration Calibration { get; }

    /// <summary>The predictor's training figures.</summary>
    public PredictorTrainingSummary PredictorSummary { get; }

    /// <summary>Parameters of predictor and selector.</summary>
    public long ParameterCount =>
        PredictorArchitecture.ParameterCount(Predictor.Module.InputSize, Predictor.Module.Classes) + SelectorArchitecture.ParameterCount(Predictor.Module.Classes);

    /// <summary>Memory of predictor and selector parameters, in bytes (float32).</summary>
    public long ParameterBytes => ParameterCount * sizeof(float);

    internal SharedModule<PredictorNetwork> Predictor { get; }

    internal SharedModule<SelectorNetwork> Selector { get; }

    /// <summary>
    /// The cache lookup on a batch of layer features [N, D]: the predictor's log-probabilities and whether the
    /// selector's P(hit) reaches the threshold ([N] bools). The engine runs exactly this, and
    /// <see cref="CacheMeasurements"/> counts and times exactly this.
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
    internal LearnedCache Share() => new(Layer, Predictor.Acquire(), Selector.Acquire(), Calibration, PredictorSummary);

    /// <summary>The same networks with another threshold (e.g. recalibrated for another precision).</summary>
    internal LearnedCache WithCalibration(ExitCalibration calibration) => new(Layer, Predictor.Acquire(), Selector.Acquire(), calibration, PredictorSummary);

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
