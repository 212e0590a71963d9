namespace Gati.MLNet.Models.Predictors;

/// <summary>The three predictor network families of the reference, and Grid for large feature maps.</summary>
public enum PredictorKind
{
    /// <summary>Linear(D, hidden) → ReLU → Linear(hidden, classes).</summary>
    FC,

    /// <summary>AdaptiveAvgPool1d(pool) over the flattened features → Linear(pool, hidden) → ReLU → Linear(hidden, classes).</summary>
    Pool,

    /// <summary>Conv1d(1 → 1, kernel, stride) over the flattened features → ReLU → Linear(L, classes).</summary>
    Conv,

    /// <summary>
    /// AdaptiveAvgPool2d(grid × grid) per channel of the feature map → Linear(C·grid², hidden) → ReLU → Linear(hidden,
    /// classes): an exit head whose size follows the channels, not the map's area (for 224 x 224 inputs, whose early
    /// maps hold 200,000 values).
    /// </summary>
    Grid,
}
