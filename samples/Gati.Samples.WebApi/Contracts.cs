namespace Gati.Samples.WebApi;

/// <summary>The model's input row for the pool.</summary>
public sealed class ImageInput
{
    /// <summary>Normalised planar pixels, C*H*W.</summary>
    public float[] Image { get; set; } = [];
}

/// <summary>A prediction.</summary>
/// <param name="Label">Predicted class name.</param>
/// <param name="LabelKey">Predicted class as a 1-based key.</param>
/// <param name="Scores">Probability per class name.</param>
/// <param name="ExitLayer">The layer whose learned cache answered, or 0 when the full model ran.</param>
/// <param name="ExitedEarly">True when a cache answered.</param>
/// <param name="LatencyMs">Wall time of the engine call that answered (a micro-batch when several requests arrived together).</param>
public sealed record PredictionResponse(string Label, uint LabelKey, IReadOnlyDictionary<string, float> Scores, int ExitLayer, bool ExitedEarly, double LatencyMs);
