namespace Gati.MLNet.Policy;

/// <summary>Figures of a calibrated exit threshold on held-out data.</summary>
/// <param name="Threshold">Exit when P(hit) ≥ this (+∞: never exit).</param>
/// <param name="Precision">Of the rows that exit, the share whose predictor label equals the base label.</param>
/// <param name="Recall">Of the rows where the predictor is right, the share that exits.</param>
/// <param name="HitRate">Share of all rows that exit.</param>
/// <param name="Rows">Held-out rows used.</param>
/// <param name="PredictorAgreement">Share of held-out rows where the predictor agrees with the base model.</param>
public sealed record ExitCalibration(float Threshold, double Precision, double Recall, double HitRate, long Rows, double PredictorAgreement)
{
    private const int MaxCurvePoints = 256;

    /// <summary>True when no threshold reached the target: the cache never exits.</summary>
    public bool NeverExits => float.IsPositiveInfinity(Threshold);

    /// <summary>
    /// Precision and hit rate at other thresholds on the same calibration rows (at most 256 points, thresholds
    /// descending), so that a served model can be re-thresholded for another precision target without the data.
    /// </summary>
    public IReadOnlyList<CalibrationPoint> Curve { get; init; } = [];

    /// <summary>The calibration rows on which the predictor agreed with the base model (for recall).</summary>
    public long CorrectRows { get; init; }

    /// <summary>
    /// The lowest threshold of <see cref="Curve"/> whose exits reach <paramref name="targetPrecision"/> with at least
    /// <paramref name="minimumHits"/> exits; never exit when none does.
    /// </summary>
    public ExitCalibration ForPrecision(double targetPrecision, int minimumHits = 20)
    {
        if (targetPrecision is <= 0 or > 1 || double.IsNaN(targetPrecision))
            throw new ArgumentOutOfRangeException(nameof(targetPrecision), targetPrecision, "Target precision must be in (0, 1].");
        if (Curve.Count == 0) throw new InvalidOperationException("This calibration has no curve to re-threshold from.");
        var best = Curve.Where(p => p.Exits >= minimumHits && p.Precision >= targetPrecision).MaxBy(p => p.Exits);
        if (best is null) return this with { Threshold = float.PositiveInfinity, Precision = double.NaN, Recall = 0, HitRate = 0 };
        var right = Math.Round(best.Precision * best.Exits);
        return this with
        {
            Threshold = best.Threshold,
            Precision = best.Precision,
            HitRate = best.HitRate,
            Recall = CorrectRows == 0 ? 0 : right / CorrectRows,
        };
    }

    /// <inheritdoc/>
    public bool Equals(ExitCalibration? other) =>
        other is not null && Threshold.Equals(other.Threshold) && Precision.Equals(other.Precision) && Recall.Equals(other.Recall) &&
        HitRate.Equals(other.HitRate) && Rows == other.Rows && PredictorAgreement.Equals(other.PredictorAgreement) &&
        CorrectRows == other.CorrectRows && Curve.SequenceEqual(other.Curve);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Threshold, Precision, HitRate, Rows, Curve.Count);

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
        var curve = new List<CalibrationPoint>();
        while (taken < rows)
        {
            // Take all rows tied at this probability together: a threshold cannot split them.
            var p = hitProbability[order[taken]];
            while (taken < rows && hitProbability[order[taken]] == p)
            {
                if (correct[order[taken]]) right++;
                taken++;
            }
            curve.Add(new CalibrationPoint(p, (double)right / taken, (double)taken / rows, taken));
            if (taken >= minimumHits && right >= targetPrecision * taken)
            {
                bestCount = taken;
                bestCorrect = right;
            }
        }
        var agreement = (double)totalCorrect / rows;
        var points = Downsample(curve, bestCount);
        if (bestCount == 0)
            return new ExitCalibration(float.PositiveInfinity, double.NaN, 0, 0, rows, agreement) { Curve = points, CorrectRows = totalCorrect };
        var threshold = hitProbability[order[bestCount - 1]];
        return new ExitCalibration(threshold, (double)bestCorrect / bestCount, totalCorrect == 0 ? 0 : (double)bestCorrect / totalCorrect,
            (double)bestCount / rows, rows, agreement) { Curve = points, CorrectRows = totalCorrect };
    }

    /// <summary>At most 256 points, evenly spaced, always keeping the chosen one and the last.</summary>
    private static CalibrationPoint[] Downsample(List<CalibrationPoint> curve, long chosenExits)
    {
        if (curve.Count <= MaxCurvePoints) return curve.ToArray();
        var step = (double)curve.Count / (MaxCurvePoints - 2);
        var keep = new SortedSet<int> { curve.Count - 1 };
        for (var i = 0; i < MaxCurvePoints - 2; i++) keep.Add((int)(i * step));
        var chosen = curve.FindIndex(p => p.Exits == chosenExits);
        if (chosen >= 0) keep.Add(chosen);
        return keep.Select(i => curve[i]).ToArray();
    }
}

/// <summary>One point of a calibration curve.</summary>
/// <param name="Threshold">Exit when P(hit) ≥ this.</param>
/// <param name="Precision">Agreement among the rows that would exit.</param>
/// <param name="HitRate">Share of calibration rows that would exit.</param>
/// <param name="Exits">Number of calibration rows that would exit.</param>
public sealed record CalibrationPoint(float Threshold, double Precision, double HitRate, long Exits);
