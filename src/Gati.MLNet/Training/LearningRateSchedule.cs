namespace Gati.MLNet.Training;

/// <summary>How the learning rate changes over training.</summary>
public enum LearningRateSchedule
{
    /// <summary>Cosine annealing from the initial rate to 0 over all training steps (the reference's schedule, stepped per batch).</summary>
    Cosine,

    /// <summary>The initial rate throughout.</summary>
    Constant,

    /// <summary>Halve the rate every <c>StepEpochs</c> epochs (the reference's predictor and selector schedule).</summary>
    Step,
}

/// <summary>Learning-rate arithmetic shared by the trainers.</summary>
internal static class LearningRates
{
    /// <param name="schedule">The schedule.</param>
    /// <param name="initial">The initial rate.</param>
    /// <param name="step">0-based global step.</param>
    /// <param name="totalSteps">Steps in the whole run (for cosine).</param>
    /// <param name="epoch">0-based epoch (for step decay).</param>
    /// <param name="stepEpochs">Epochs between halvings (for step decay).</param>
    public static double At(LearningRateSchedule schedule, double initial, long step, long totalSteps, int epoch, int stepEpochs = 5) => schedule switch
    {
        LearningRateSchedule.Cosine => initial * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(step, totalSteps) / Math.Max(1, totalSteps))),
        LearningRateSchedule.Constant => initial,
        LearningRateSchedule.Step => initial * Math.Pow(0.5, epoch / Math.Max(1, stepEpochs)),
        _ => throw new ArgumentOutOfRangeException(nameof(schedule), schedule, null),
    };
}
