using Gati.MLNet.Policy;

namespace Gati.MLNet.Online;

/// <summary>
/// Captured requests served again in simulation (<see cref="ExitSimulation"/>) under other thresholds: how the shadow
/// sampler finds the thresholds a reaction moves to.
/// </summary>
internal static class CapturedRows
{
    /// <summary>Serves captured rows again with <paramref name="thresholds"/>: how many agree, and the disagreements per cache.</summary>
    public static (long Agreed, IReadOnlyList<int> Disagreements) Serve(ShadowRow[] rows, float[] thresholds)
    {
        var served = ExitSimulation.Serve(rows, thresholds.Length, row => ExitOf(row, thresholds), (row, exit) => row.PredictedClasses[exit] == row.BaseClass);
        return (served.Agreed, served.Disagreements);
    }

    /// <summary>The cache a captured row exits at under <paramref name="thresholds"/> (-1: the whole network).</summary>
    public static int ExitOf(ShadowRow row, float[] thresholds) => ExitSimulation.ExitOf(row.HitProbabilities, thresholds);

    /// <summary>
    /// Whether <paramref name="rows"/> served again with <paramref name="thresholds"/> clear <paramref name="target"/>:
    /// the exact lower bound of their agreement at one-sided <paramref name="confidence"/>.
    /// </summary>
    public static bool Clear(ShadowRow[] rows, float[] thresholds, double target, double confidence) =>
        Clears(Serve(rows, thresholds).Agreed, rows.Length, target, confidence);

    private static bool Clears(long agreed, int rows, double target, double confidence) =>
        AgreementBounds.ClopperPearsonLower(agreed, rows, confidence) >= target;

    /// <summary>
    /// The lowest threshold above the current one for cache <paramref name="cache"/> under which the rows clear the
    /// target (<see cref="Clear"/>), and so do the <paramref name="newest"/> of them when given; failing that (the rows it
    /// lets go disagree at a later cache too), the lowest under which this cache's own exits all agree, so that the later
    /// caches are tightened next; +∞ when neither exists.
    /// </summary>
    public static float Tighten(ShadowRow[] rows, float[] thresholds, int cache, double target, double confidence, ShadowRow[]? newest = null)
    {
        var candidates = rows.Select(r => r.HitProbabilities[cache]).Where(p => ExitSimulation.Fires(p, thresholds[cache])).Distinct().Order().ToArray();
        var trial = thresholds.ToArray();
        var clean = float.PositiveInfinity;
        foreach (var candidate in candidates)
        {
            // Exits need P(hit) >= threshold: just above a row's P(hit) removes that row's exit.
            trial[cache] = MathF.BitIncrement(candidate);
            var (agreed, disagreements) = Serve(rows, trial);
            if (Clears(agreed, rows.Length, target, confidence) && (newest is null || Clear(newest, trial, target, confidence))) return trial[cache];
            if (float.IsPositiveInfinity(clean) && disagreements[cache] == 0 && rows.Any(r => ExitSimulation.Fires(r.HitProbabilities[cache], trial[cache]))) clean = trial[cache];
        }
        return clean;
    }
}
