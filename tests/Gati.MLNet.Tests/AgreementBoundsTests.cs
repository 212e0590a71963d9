using Gati.MLNet.Policy;

namespace Gati.MLNet.Tests;

/// <summary>The statistics module: exact (Clopper-Pearson) and Wilson bounds against values computed independently.</summary>
public sealed class AgreementBoundsTests
{
    [Theory]
    [InlineData(0, 0, 0.0, 1.0)]
    [InlineData(10, 10, 0.7225, 1.0)]
    [InlineData(5, 10, 0.2366, 0.7634)]
    [InlineData(99, 100, 0.9455, 0.9982)]
    public void Wilson_KnownValues(long successes, long trials, double lower, double upper)
    {
        var (l, u) = AgreementBounds.Wilson(successes, trials);
        Assert.Equal(lower, l, 4);
        Assert.Equal(upper, u, 4);
    }

    [Fact]
    public void Wilson_OneSided95_KnownValuesFor99Of100()
    {
        // z = 1.6449: centre (p + z²/2n) / (1 + z²/n), half-width z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/4n²).
        var (lower, upper) = AgreementBounds.WilsonAtConfidence(99, 100, 0.95);
        Assert.Equal(0.95642, lower, 5);
        Assert.Equal(0.99777, upper, 5);
        Assert.Equal(AgreementBounds.Wilson(99, 100, AgreementBounds.Z95OneSided).Lower, lower, 7); // the quantile is an approximation (1e-9)
    }

    [Fact]
    public void ClopperPearson_99Of100At95Percent_Is0Point9534()
    {
        // p^100 + 100 p^99 (1 - p) = 0.05 at p = 0.953440 (solved by bisection outside this library).
        Assert.Equal(0.953440, AgreementBounds.ClopperPearsonLower(99, 100, 0.95), 5);
        // The same bound seen from the disagreements: 1 of 100.
        Assert.Equal(1 - 0.953440, AgreementBounds.ClopperPearsonUpper(1, 100, 0.95), 5);
        // The exact bound is the more cautious of the two near 1.
        Assert.True(AgreementBounds.ClopperPearsonLower(99, 100, 0.95) < AgreementBounds.WilsonAtConfidence(99, 100, 0.95).Lower);
    }

    [Fact]
    public void ClopperPearson_ClosedFormsAtTheEnds()
    {
        // With no successes (all successes), the one-sided bound solves (1 - p)^n = alpha (p^n = alpha).
        Assert.Equal(1 - Math.Pow(0.05, 1.0 / 10), AgreementBounds.ClopperPearsonUpper(0, 10), 6);
        Assert.Equal(Math.Pow(0.05, 1.0 / 300), AgreementBounds.ClopperPearsonLower(300, 300), 6);
        Assert.Equal(1.0, AgreementBounds.ClopperPearsonUpper(10, 10));
        Assert.Equal(0.0, AgreementBounds.ClopperPearsonLower(0, 10));
        // Inside: the binomial tail at the bound equals alpha. P(X <= 3 | n = 50, p = upper) = 0.05.
        var p = AgreementBounds.ClopperPearsonUpper(3, 50);
        var tail = Enumerable.Range(0, 4).Sum(k => Binomial(50, k) * Math.Pow(p, k) * Math.Pow(1 - p, 50 - k));
        Assert.Equal(0.05, tail, 6);
    }

    [Theory]
    [InlineData(300, 0)]
    [InlineData(500, 1)]
    [InlineData(1000, 4)]
    [InlineData(0, 0)]
    public void AllowedDisagreements_99PercentAt95_KnownCounts(int rows, int allowed)
    {
        // Counts from the binomial tail computed independently: the largest k whose exact upper bound stays <= 1 %.
        Assert.Equal(allowed, AgreementBounds.AllowedDisagreements(rows, 0.99, 0.95));
        if (rows > 0) Assert.True(AgreementBounds.ClopperPearsonUpper(allowed + 1, rows, 0.95) > 0.01);
    }

    [Fact]
    public void FewestTrialsToClear_PerfectRecordAt99Percent_Is299()
    {
        // With every trial a success the exact lower bound is alpha^(1/n): at least 0.99 from n = ln 0.05 / ln 0.99 = 298.07.
        Assert.Equal(299, AgreementBounds.FewestTrialsToClear(n => n, 0.99, 0.95, 1, 1.0));
        // A coarser search stops at or a little past it.
        Assert.InRange(AgreementBounds.FewestTrialsToClear(n => n, 0.99, 0.95, 100, 1.05), 299, 299 * 1.05 + 1);
        // Wilson's n / (n + z²) would have cleared from n = 268: the exact bound asks for more evidence.
        Assert.True(AgreementBounds.Wilson(268, 268, AgreementBounds.Z95OneSided).Lower >= 0.99);
    }

    [Fact]
    public void Exact_IsTheTwoOneSidedClopperPearsonBounds()
    {
        var (lower, upper) = AgreementBounds.Exact(990, 1000, 0.95);
        Assert.Equal(AgreementBounds.ClopperPearsonLower(990, 1000, 0.95), lower);
        Assert.Equal(AgreementBounds.ClopperPearsonUpper(990, 1000, 0.95), upper);
        // Each bound's binomial tail at the bound is alpha: P(X >= 990 | p = lower) = 0.05 and P(X <= 990 | p = upper) = 0.05.
        Assert.Equal(0.05, Tail(1000, 990, 1000, lower), 6);
        Assert.Equal(0.05, Tail(1000, 0, 990, upper), 6);
        Assert.Equal((0.0, 1.0), AgreementBounds.Exact(0, 0, 0.95));
    }

    [Theory]
    [InlineData(0.95, 1.6448536)]
    [InlineData(0.975, 1.9599640)]
    [InlineData(0.5, 0.0)]
    [InlineData(0.01, -2.3263479)]
    public void NormalQuantile_KnownValues(double p, double z) => Assert.Equal(z, AgreementBounds.NormalQuantile(p), 6);

    [Fact]
    public void Bounds_NotAProportion_Throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => AgreementBounds.Wilson(11, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => AgreementBounds.ClopperPearsonLower(-1, 10));
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => AgreementBounds.Exact(5, 10, 95));
        Assert.Contains("confidence must be in (0, 1)", ex.Message, StringComparison.Ordinal);
    }

    private static double Binomial(int n, int k) => Enumerable.Range(1, k).Aggregate(1.0, (acc, i) => acc * (n - k + i) / i);

    /// <summary>P(from &lt;= X &lt;= to) for X ~ Binomial(n, p), summed in logs (n up to thousands).</summary>
    private static double Tail(int n, int from, int to, double p) =>
        Enumerable.Range(from, to - from + 1).Sum(k => Math.Exp(LogBinomial(n, k) + k * Math.Log(p) + (n - k) * Math.Log(1 - p)));

    private static double LogBinomial(int n, int k) => Enumerable.Range(1, k).Sum(i => Math.Log(n - k + i) - Math.Log(i));
}
