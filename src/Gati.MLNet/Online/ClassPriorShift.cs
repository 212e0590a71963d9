namespace Gati.MLNet.Online;

/// <summary>
/// The class-prior correction of a predictor for the current traffic (docs/online.md, "Specialising to the window"):
/// offsets b, one per class, added to its class scores, so that it reads log p(y|x) + b_y, renormalised. When only the
/// mix of classes changes (a phase whose popular classes take most requests), Bayes' rule says the right correction is
/// b_y = log(π'(y) / π(y)); rather than estimate both priors, the offsets are fitted directly: they minimise the
/// cross-entropy of the shifted predictor against the base model's answers on recent rows, plus a ridge penalty that
/// keeps a class seen rarely, or not at all, from being ruled out. The problem is convex in b (k parameters), so it
/// has one answer, found by gradient descent; k parameters on hundreds of rows cannot memorise them.
/// </summary>
internal static class ClassPriorShift
{
    /// <summary>Weight of the ridge penalty (λ/2)·|b|² on the mean cross-entropy.</summary>
    public const double Ridge = 0.01;

    /// <summary>The largest offset in either direction (a factor of about 150 on a class's odds).</summary>
    public const float Limit = 5f;

    private const int MaxIterations = 500;
    private const double Tolerance = 1e-6;

    /// <summary>
    /// Fits the offsets on rows' log-probabilities <paramref name="logProbabilities"/> ([rows × classes], row-major)
    /// and the base model's answers <paramref name="baseClasses"/>.
    /// </summary>
    /// <returns>One offset per class, each within ±<see cref="Limit"/>; all zero for no rows.</returns>
    public static float[] Fit(ReadOnlySpan<float> logProbabilities, ReadOnlySpan<int> baseClasses, int classes)
    {
        if (classes < 2) throw new ArgumentOutOfRangeException(nameof(classes), classes, "At least 2 classes.");
        var rows = baseClasses.Length;
        if (logProbabilities.Length != rows * classes)
            throw new ArgumentException($"Expected {rows} x {classes} log-probabilities, got {logProbabilities.Length}.", nameof(logProbabilities));
        var offsets = new double[classes];
        if (rows == 0) return new float[classes];
        var counts = new double[classes];
        foreach (var label in baseClasses)
        {
            if ((uint)label >= (uint)classes) throw new ArgumentOutOfRangeException(nameof(baseClasses), label, $"A base answer outside the {classes} classes.");
            counts[label]++;
        }
        for (var r = 0; r < logProbabilities.Length; r++)
            if (!float.IsFinite(logProbabilities[r]) && !float.IsNegativeInfinity(logProbabilities[r]))
                throw new ArgumentException($"Log-probability {r} is {logProbabilities[r]}: the predictor's output is not finite.", nameof(logProbabilities));
        // The Hessian of the mean cross-entropy is at most half the identity (a softmax's covariance), so steps of
        // 1 / (1/2 + λ) descend without overshooting.
        var step = 1 / (0.5 + Ridge);
        var gradient = new double[classes];
        var scores = new double[classes];
        for (var iteration = 0; iteration < MaxIterations; iteration++)
        {
            Array.Clear(gradient);
            for (var r = 0; r < rows; r++)
            {
                var max = double.NegativeInfinity;
                for (var c = 0; c < classes; c++)
                {
                    scores[c] = logProbabilities[r * classes + c] + offsets[c];
                    if (scores[c] > max) max = scores[c];
                }
                double sum = 0;
                for (var c = 0; c < classes; c++) sum += scores[c] = Math.Exp(scores[c] - max);
                for (var c = 0; c < classes; c++) gradient[c] += scores[c] / sum;
            }
            double norm = 0;
            for (var c = 0; c < classes; c++)
            {
                gradient[c] = (gradient[c] - counts[c]) / rows + Ridge * offsets[c];
                norm += gradient[c] * gradient[c];
            }
            if (norm < Tolerance * Tolerance) break;
            for (var c = 0; c < classes; c++) offsets[c] = Math.Clamp(offsets[c] - step * gradient[c], -Limit, Limit);
        }
        // Only differences between offsets change the predictor: centre them so the shift reads as odds for and against.
        var mean = offsets.Average();
        return offsets.Select(o => (float)Math.Clamp(o - mean, -Limit, Limit)).ToArray();
    }
}
