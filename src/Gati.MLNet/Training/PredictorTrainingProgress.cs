using Gati.MLNet.Models.Predictors;

namespace Gati.MLNet.Training;

/// <summary>Progress of predictor training: one report per predictor per epoch, plus batch-level reports.</summary>
public sealed record PredictorTrainingProgress
{
    /// <summary>1-based epoch; 0 for the held-out agreement of a predictor's start when it starts as the base model's head (<see cref="PredictorTrainingOptions.InitializeFromBaseHead"/>).</summary>
    public required int Epoch { get; init; }

    /// <summary>Maximum epochs.</summary>
    public required int TotalEpochs { get; init; }

    /// <summary>The predictor reported on (null for batch-level reports covering all predictors).</summary>
    public int? Layer { get; init; }

    /// <summary>The predictor's architecture (null for batch-level reports).</summary>
    public PredictorArchitecture? Architecture { get; init; }

    /// <summary>Rows processed in this epoch so far.</summary>
    public required long Rows { get; init; }

    /// <summary>Mean distillation loss over the epoch so far (of this predictor; of all active ones for batch reports).</summary>
    public required double Loss { get; init; }

    /// <summary>Rows per second in this epoch.</summary>
    public required double RowsPerSecond { get; init; }

    /// <summary>Agreement with the base model on the held-out data after this epoch (end-of-epoch reports with held-out data).</summary>
    public double? ValidationAgreement { get; init; }

    /// <summary>The best epoch so far (0: the start, for a predictor that started as the base model's head).</summary>
    public int? BestEpoch { get; init; }

    /// <summary>True once this predictor stopped early (no held-out improvement for Patience epochs).</summary>
    public bool Stopped { get; init; }

    /// <summary>True for end-of-epoch reports.</summary>
    public bool EpochCompleted { get; init; }

    /// <summary>
    /// The factor on the input layer's learning rate set by <see cref="PredictorTrainingOptions.InputStepBound"/>
    /// (end-of-epoch reports of predictors whose rate it lowered; null otherwise).
    /// </summary>
    public double? InputRateScale { get; init; }

    /// <summary>True when this report was restored from a checkpoint.</summary>
    public bool Restored { get; init; }
}
