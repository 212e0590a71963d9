namespace Gati.MLNet.Training;

/// <summary>What a checkpoint keeps of a <see cref="PredictorTrainee"/>'s progress (serialised as JSON in its header).</summary>
internal sealed class PredictorTraineeState
{
    public int BestEpoch { get; set; } // 0: the starting weights (a base-head start), or none yet when BestAgreement is -inf
    public double BestAgreement { get; set; } = double.NegativeInfinity;
    public bool Stopped { get; set; }
    public int EpochsRun { get; set; }
    public List<double[]> History { get; set; } = []; // epoch (0: the start), loss, agreement

    /// <summary>The epoch whose weights are kept, once held-out agreement picked one.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int? KeptEpoch => double.IsFinite(BestAgreement) ? BestEpoch : null;
}
