namespace Gati.MLNet.Transforms;

/// <summary>
/// One finished epoch's figures, kept in checkpoints, reported after training and carried by the trained
/// <see cref="ResNetTransformer"/> (<see cref="ResNetTransformer.TrainingHistory"/>).
/// </summary>
public sealed record EpochSummary(int Epoch, double Loss, double Accuracy, double? ValidationAccuracy, double ImagesPerSecond, double Seconds);
