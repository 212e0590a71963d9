namespace Gati.MLNet.Inference;

/// <summary>One input's answer from the early-exit engine.</summary>
public sealed class EarlyExitPrediction
{
    /// <summary>Predicted class as a 1-based key (as ML.NET's PredictedLabel).</summary>
    public uint PredictedLabel { get; set; }

    /// <summary>Predicted class name.</summary>
    public string PredictedClass { get; set; } = "";

    /// <summary>Class probabilities (from the cache's predictor on an exit, from the base model otherwise).</summary>
    public float[] Score { get; set; } = [];

    /// <summary>The layer whose cache answered, or 0 when the input ran through the whole base model.</summary>
    public int ExitLayer { get; set; }

    /// <summary>True when a cache answered.</summary>
    public bool ExitedEarly => ExitLayer > 0;

    /// <summary>Wall time of the engine call that produced this answer (the whole batch), in milliseconds.</summary>
    public double LatencyMs { get; set; }
}
