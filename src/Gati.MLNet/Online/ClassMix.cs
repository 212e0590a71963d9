namespace Gati.MLNet.Online;

/// <summary>
/// The mix of the base model's answers over labelled shadow rows, and how far two mixes lie apart: what tells the
/// updater that the popular classes changed since its last attempt (OnlineCaches), so that it tries again without
/// waiting out its back-off.
/// </summary>
internal static class ClassMix
{
    /// <summary>
    /// Total variation distance above which two mixes count as different traffic: half the summed differences of the
    /// shares. Two samples of 150 rows from one mix of ten classes lie about 0.1 apart; phases with disjoint popular
    /// classes (90 % of requests) about 0.9.
    /// </summary>
    public const double ChangedAbove = 0.3;

    /// <summary>Each class's share of the base model's answers on the labelled <paramref name="rows"/> (all zero for none).</summary>
    public static double[] Of(IEnumerable<ShadowRow> rows, int classes)
    {
        var shares = new double[classes];
        var n = 0;
        foreach (var row in rows)
        {
            var label = row.BaseClass;
            if ((uint)label >= (uint)classes) continue;
            shares[label]++;
            n++;
        }
        if (n > 0) for (var c = 0; c < classes; c++) shares[c] /= n;
        return shares;
    }

    /// <summary>Total variation distance between two mixes: 0 for the same, 1 for disjoint classes.</summary>
    public static double Distance(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        if (a.Count != b.Count) throw new ArgumentException($"Mixes over {a.Count} and {b.Count} classes cannot be compared.", nameof(b));
        double sum = 0;
        for (var c = 0; c < a.Count; c++) sum += Math.Abs(a[c] - b[c]);
        return sum / 2;
    }
}
