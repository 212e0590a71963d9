namespace Gati.MLNet.Training;

/// <summary>A progress report from <see cref="ResNetTrainer"/>: sent every few batches and at the end of each epoch.</summary>
public sealed record ResNetTrainingProgress
{
    /// <summary>1-based epoch.</summary>
    public required int Epoch { get; init; }

    /// <summary>Epochs in the whole run.</summary>
    public required int TotalEpochs { get; init; }

    /// <summary>Batches done in this epoch.</summary>
    public required int Batch { get; init; }

    /// <summary>Batches per epoch, when the training data's row count is known.</summary>
    public int? BatchesPerEpoch { get; init; }

    /// <summary>Images processed in this epoch.</summary>
    public required long Images { get; init; }

    /// <summary>Mean training loss over this epoch so far.</summary>
    public required double Loss { get; init; }

    /// <summary>Training accuracy over this epoch so far (on augmented images).</summary>
    public required double Accuracy { get; init; }

    /// <summary>Training throughput in this epoch, images per second.</summary>
    public required double ImagesPerSecond { get; init; }

    /// <summary>Learning rate of the latest step.</summary>
    public required double LearningRate { get; init; }

    /// <summary>Wall time of this epoch so far.</summary>
    public required TimeSpan Elapsed { get; init; }

    /// <summary>True for the report that closes an epoch (after validation and checkpointing).</summary>
    public bool EpochCompleted { get; init; }

    /// <summary>Accuracy on the validation set at the end of the epoch, when one was given.</summary>
    public double? ValidationAccuracy { get; init; }

    /// <summary>True when this epoch was restored from a checkpoint rather than trained in this run.</summary>
    public bool Restored { get; init; }
}
