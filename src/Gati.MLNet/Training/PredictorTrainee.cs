using Gati.MLNet.Models.Predictors;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>One predictor while <see cref="PredictorTraining"/> trains it: its network, optimizer, input scaling and progress.</summary>
internal sealed class PredictorTrainee(PredictorSpec spec, PredictorNetwork network, SGD optimizer, double[] rateScales, int featureIndex, bool fromHead,
    (double Mean, double Scale) input = default) : IDisposable
{
    public bool FromHead { get; } = fromHead; // started as the base model's head (BaseHeadStart)
    // Trains on (features - Mean) / Scale; folded into the network at the end (Scale 0: as they are).
    public (double Mean, double Scale) Input { get; } = input.Scale > 0 ? input : (0, 1);

    /// <summary>What the network reads while it trains: the standardised features.</summary>
    public Tensor Scaled(Tensor features) => Input is (0, 1) ? features : features.sub(Input.Mean).div(Input.Scale);
    public PredictorSpec Spec { get; } = spec;
    public PredictorNetwork Network { get; } = network;
    public SGD Optimizer { get; } = optimizer;
    public double[] RateScales { get; } = rateScales; // per optimizer group, times the epoch's learning rate
    public double? InputRateScale => RateScales.Length > 1 ? RateScales[0] : null;
    public int FeatureIndex { get; } = featureIndex;
    public PredictorTraineeState State { get; set; } = new();
    public byte[]? Best { get; set; }

    public void Dispose()
    {
        Optimizer.Dispose();
        Network.Dispose();
    }
}
