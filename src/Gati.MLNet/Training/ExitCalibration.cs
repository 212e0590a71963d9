namespace Gati.MLNet.Training;

/// <summary>Figures of a calibrated exit threshold on held-out data.</summary>
/// <param name="Threshold">Exit when P(hit) ≥ this (+∞: never exit).</param>
/// <param name="Precision">Of the rows that exit, the share whose predictor label equals the base label.</param>
/// <param name="Recall">Of the rows where the predictor is right, the share that exits.</param>
/// <param name="HitRate">Share of all rows that exit.</param>
/// <param name="Rows">Held-out rows used.</param>
/// <param name="PredictorAgreement">Share of held-out rows where the predictor agrees with the base model.</param>
public sealed record ExitCalibration(float Threshold, double Precision, double Recall, double HitRate, long Rows, double PredictorAgreement)
{
    /// <summary>True when no threshold reached the target: the cache never exits.</summary>
    public bool NeverExits => float.IsPositiveInfinity(Threshold);

    /// <summary>
    /// The lowest threshold whose exits reach <paramref name="targetPrecision"/> on held-out data: rows are sorted by
    /// P(hit), descending, and the longest prefix (ties kept together) whose precision is at least the target is the
    /// exit set. Fewer than <paramref name="minimumHits"/> exits, or none reaching the target, means never exit.
    /// </summary>
    /// <param name="hitProbability">P(hit) per held-out row.</param>
    /// <param name="correct">Whether the predictor agreed with the base model on that row.</param>
    /// <param name="targetPrecision">Required precision of exits, e.g. 0.995.</param>
    /// <param name="minimumHits">Fewest exits for a threshold to count (guards against a lucky handful).</param>
    public static ExitCalibration Calibrate(IReadOnlyList<float> hitProbability, IReadOnlyList<bool> correct, double targetPrecision, int minimumHits = 20)
    {
        ArgumentNullException.ThrowIfNull(hitProbability);
        ArgumentNullException.ThrowIfNull(correct);
        if (hitProbability.Count != correct.Count) throw new ArgumentException("One correctness flag per probability.");
        if (targetPrecision is <= 0 or > 1 || double.IsNaN(targetPrecision))
            throw new ArgumentOutOfRangeException(nameof(targetPrecision), targetPrecision, "Target precision must be in (0, 1].");
        var rows = hitProbability.Count;
        if (rows == 0) throw new ArgumentException("No held-out rows to calibrate on.");
        var totalCorrect = correct.Count(c => c);
        var order = Enumerable.Range(0, rows).OrderByDescending(i => hitProbability[i]).ToArray();
        var bestCount = 0;
        var bestCorrect = 0;
        var taken = 0;
        var right = 0;
        while (taken < rows)
        {
            // Take all rows tied at this probability together: a threshold cannot split them.
            var p = hitProbability[order[taken]];
            while (taken < rows && hitProbability[order[taken]] == p)
            {
                if (correct[order[taken]]) right++;
                taken++;
            }
            if (taken >= minimumHits && right >= targetPrecision * taken)
            {
                bestCount = taken;
                bestCorrect = right;
            }
        }
        var agreement = (double)totalCorrect / rows;
        if (bestCount == 0) return new ExitCalibration(float.PositiveInfinity, double.NaN, 0, 0, rows, agreement);
        var threshold = hitProbability[order[bestCount - 1]];
        return new ExitCalibration(threshold, (double)bestCorrect / bestCount, totalCorrect == 0 ? 0 : (double)bestCorrect / totalCorrect,
            (double)bestCount / rows, rows, agreement);
    }
}
