namespace Gati.MLNet.Models.Predictors;

/// <summary>Held-out figures of a trained predictor.</summary>
/// <param name="BestEpoch">The epoch whose weights were kept (0: the starting weights, for a predictor that started as the base model's head and that no epoch beat).</param>
/// <param name="EpochsRun">Epochs trained (early stopping may end before the maximum).</param>
/// <param name="ValidationAgreement">Agreement with the base model on the held-out data at <paramref name="BestEpoch"/> (NaN without held-out data).</param>
public sealed record PredictorTrainingSummary(int BestEpoch, int EpochsRun, double ValidationAgreement);
