namespace Gati.MLNet.Models.Predictors;

/// <summary>The three predictor network families of the reference.</summary>
public enum PredictorKind
{
    /// <summary>Linear(D, hidden) → ReLU → Linear(hidden, classes).</summary>
    FC,

    /// <summary>AdaptiveAvgPool1d(pool) over the flattened features → Linear(pool, hidden) → ReLU → Linear(hidden, classes).</summary>
    Pool,

    /// <summary>Conv1d(1 → 1, kernel, stride) over the flattened features → ReLU → Linear(L, classes).</summary>
    Conv,
}
