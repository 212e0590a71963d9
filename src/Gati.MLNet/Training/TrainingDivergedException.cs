namespace Gati.MLNet.Training;

/// <summary>
/// Training produced a non-finite loss or gradient and was stopped before the optimizer step: no model was returned and
/// no checkpoint of this epoch was written (the last checkpoint, if any, is still the last good one).
/// </summary>
public sealed class TrainingDivergedException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException(string message, string network, int epoch, int batch) : base(message)
    {
        Network = network;
        Epoch = epoch;
        Batch = batch;
    }

    /// <summary>What was being trained (e.g. "ResNet18 base model", "layer 3 FC(1024) predictor").</summary>
    public string Network { get; }

    /// <summary>1-based epoch of the failing step.</summary>
    public int Epoch { get; }

    /// <summary>1-based batch within the epoch.</summary>
    public int Batch { get; }
}
