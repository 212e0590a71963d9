namespace Gati.MLNet.Policy;

/// <summary>
/// The one home of the confidence bounds on agreement (a proportion: <c>successes</c> out of <c>trials</c>).
/// </summary>
/// <remarks>
/// Every overall agreement promise (<c>gati optimize</c> with a confidence, the thresholds an online update sets, the
/// live figures, reactions and the accept rule of online caches) is judged by one statistic, the exact one-sided
/// (Clopper-Pearson) bound at the component's confidence (<see cref="Exact"/>), so a target means the same wherever it
/// is kept (docs/early-exit.md, "Which promise each component keeps"):
/// <list type="table">
/// <listheader><term>component</term><description>bound</description></listheader>
/// <item><term><c>CacheOptimizer</c> (<c>gati optimize</c>)</term><description>exact lower bound of overall agreement on the
/// held-out rows.</description></item>
/// <item><term><c>CacheUpdater.CalibrateJointly</c> (online thresholds)</term><description>exact upper bound of the disagreement
/// rate (<see cref="AllowedDisagreements"/>), the same promise seen from the disagreements.</description></item>
/// <item><term><c>LiveAgreement</c>, <c>ShadowSampler</c> (reactions, threshold tightening, samples needed),
/// <c>OnlineCaches</c>' accept rule</term><description>exact lower and upper bounds (<see cref="Exact"/>,
/// <see cref="FewestTrialsToClear"/>).</description></item>
/// <item><term>Exit calibration (<c>ExitCalibration</c>, per exit)</term><description>none: the per-exit precision
/// target is met by the point estimate on held-out rows with at least <c>MinimumHits</c> exits.</description></item>
/// </list>
/// <see cref="Wilson"/> is kept as a closed-form approximation for callers who want one; no component judges a target
/// by it. The exact bound costs a bisection (about 43 evaluations of the incomplete beta function, under 0.1 ms for both
/// bounds of 2,000 trials), paid on the shadow worker, never on the request path.
/// </remarks>
public static class AgreementBounds
{
    /// <summary>The normal quantile for a one-sided 95 % bound.</summary>
    public const double Z95OneSided = 1.6448536269514722;

    /// <summary>Wilson's score interval at normal quantile <paramref name="z"/> (e.g. 1.96 for two-sided 95 %).</summary>
    public static (double Lower, double Upper) Wilson(long successes, long trials, double z = 1.959963984540054)
    {
        Check(successes, trials);
        if (trials == 0) return (0, 1);
        var n = (double)trials;
        var p = successes / n;
        var z2 = z * z;
        var centre = (p + z2 / (2 * n)) / (1 + z2 / n);
        var half = z / (1 + z2 / n) * Math.Sqrt(p * (1 - p) / n + z2 / (4 * n * n));
        return (Math.Max(0, centre - half), Math.Min(1, centre + half));
    }

    /// <summary>
    /// The exact (Clopper-Pearson) one-sided upper bound at <paramref name="confidence"/>: the largest proportion under
    /// which seeing at most <paramref name="successes"/> of <paramref name="trials"/> still has probability 1 − confidence.
    /// </summary>
    public static double ClopperPearsonUpper(long successes, long trials, double confidence = 0.95)
    {
        Check(successes, trials, confidence);
        if (successes >= trials) return 1;
        // Upper bound: the (confidence) quantile of Beta(successes + 1, trials - successes).
        return BetaQuantile(confidence, successes + 1, trials - successes);
    }

    /// <summary>The exact one-sided lower bound at <paramref name="confidence"/>.</summary>
    public static double ClopperPearsonLower(long successes, long trials, double confidence = 0.95)
    {
        Check(successes, trials, confidence);
        if (successes <= 0) return 0;
        return BetaQuantile(1 - confidence, successes, trials - successes + 1);
    }

    /// <summary>
    /// The exact (Clopper-Pearson) one-sided bounds at <paramref name="confidence"/>: the lower bound of the proportion
    /// (the target is shown kept when it reaches the target) and the upper bound (the target is shown missed when it falls
    /// below it), each holding with that confidence. (0, 1) without trials.
    /// </summary>
    public static (double Lower, double Upper) Exact(long successes, long trials, double confidence) =>
        (ClopperPearsonLower(successes, trials, confidence), ClopperPearsonUpper(successes, trials, confidence));

    /// <summary>
    /// The most disagreements among <paramref name="rows"/> rows under which the exact one-sided upper bound of the
    /// disagreement rate at <paramref name="confidence"/> stays at or below 1 − <paramref name="target"/>: how many
    /// mistakes a set of thresholds may make on calibration rows while agreement keeps the target at that confidence.
    /// </summary>
    public static int AllowedDisagreements(int rows, double target, double confidence)
    {
        var allowed = 0;
        while (allowed + 1 <= rows && ClopperPearsonUpper(allowed + 1, rows, confidence) <= 1 - target) allowed++;
        return allowed;
    }

    /// <summary>
    /// The fewest trials n, searched upwards from <paramref name="start"/> in steps of <paramref name="step"/> (so a
    /// little more at most; at most 10^7), whose exact lower bound at <paramref name="confidence"/> with
    /// <paramref name="successes"/>(n) successes reaches <paramref name="target"/>: how many live samples the sampler
    /// needs before a bound can show the target kept.
    /// </summary>
    public static long FewestTrialsToClear(Func<long, long> successes, double target, double confidence, long start, double step)
    {
        ArgumentNullException.ThrowIfNull(successes);
        var n = Math.Max(start, 1);
        while (ClopperPearsonLower(successes(n), n, confidence) < target && n < 10_000_000) n = Math.Max(n + 1, (long)(n * step));
        return n;
    }

    /// <summary>Wilson's score interval at one-sided <paramref name="confidence"/> (e.g. 0.95): an approximation of <see cref="Exact"/>.</summary>
    public static (double Lower, double Upper) WilsonAtConfidence(long successes, long trials, double confidence) =>
        Wilson(successes, trials, NormalQuantile(confidence));

    /// <summary>The standard normal quantile (Acklam's rational approximation, relative error below 1.2e-9).</summary>
    public static double NormalQuantile(double p)
    {
        if (p is <= 0 or >= 1 || double.IsNaN(p)) throw new ArgumentOutOfRangeException(nameof(p), p, "A quantile needs p in (0, 1).");
        ReadOnlySpan<double> a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00];
        ReadOnlySpan<double> b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01];
        ReadOnlySpan<double> c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00];
        ReadOnlySpan<double> d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
        const double low = 0.02425;
        if (p < low)
        {
            var q = Math.Sqrt(-2 * Math.Log(p));
            return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
        }
        if (p > 1 - low) return -NormalQuantile(1 - p);
        var r = p - 0.5;
        var s = r * r;
        return (((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5]) * r / (((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1);
    }

    private static void Check(long successes, long trials, double confidence)
    {
        if (confidence is <= 0 or >= 1 || double.IsNaN(confidence))
            throw new ArgumentOutOfRangeException(nameof(confidence), confidence, "A one-sided confidence must be in (0, 1), e.g. 0.95.");
        Check(successes, trials);
    }

    private static void Check(long successes, long trials)
    {
        if (trials < 0 || successes < 0 || successes > trials)
            throw new ArgumentOutOfRangeException(nameof(successes), $"{successes} successes out of {trials} trials is not a proportion.");
    }

    /// <summary>The x with I_x(a, b) = q, by bisection (monotone), to within 1e-13: far below any rate a target is set at.</summary>
    private static double BetaQuantile(double q, double a, double b)
    {
        double low = 0, high = 1;
        while (high - low > 1e-13)
        {
            var mid = (low + high) / 2;
            if (RegularizedIncompleteBeta(mid, a, b) < q) low = mid;
            else high = mid;
        }
        return (low + high) / 2;
    }

    /// <summary>I_x(a, b) by its continued fraction (Lentz's method), using the symmetry for x beyond the mean.</summary>
    internal static double RegularizedIncompleteBeta(double x, double a, double b)
    {
        if (x <= 0) return 0;
        if (x >= 1) return 1;
        var logFront = LogGamma(a + b) - LogGamma(a) - LogGamma(b) + a * Math.Log(x) + b * Math.Log(1 - x);
        if (x < (a + 1) / (a + b + 2)) return Math.Exp(logFront) * ContinuedFraction(x, a, b) / a;
        return 1 - Math.Exp(logFront) * ContinuedFraction(1 - x, b, a) / b;
    }

    private static double ContinuedFraction(double x, double a, double b)
    {
        const double tiny = 1e-300;
        var c = 1.0;
        var d = 1 - (a + b) * x / (a + 1);
        d = 1 / (Math.Abs(d) < tiny ? tiny : d);
        var h = d;
        for (var m = 1; m <= 10_000; m++)
        {
            var m2 = 2 * m;
            var even = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
            d = 1 + even * d;
            d = 1 / (Math.Abs(d) < tiny ? tiny : d);
            c = 1 + even / c;
            if (Math.Abs(c) < tiny) c = tiny;
            h *= d * c;
            var odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
            d = 1 + odd * d;
            d = 1 / (Math.Abs(d) < tiny ? tiny : d);
            c = 1 + odd / c;
            if (Math.Abs(c) < tiny) c = tiny;
            var delta = d * c;
            h *= delta;
            if (Math.Abs(delta - 1) < 1e-15) break;
        }
        return h;
    }

    /// <summary>ln Γ(x) for x &gt; 0 (Lanczos, g = 7, 9 terms; about 15 significant digits).</summary>
    private static double LogGamma(double x)
    {
        ReadOnlySpan<double> coefficients =
        [
            0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
            12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
        ];
        if (x < 0.5) return Math.Log(Math.PI / Math.Sin(Math.PI * x)) - LogGamma(1 - x);
        x -= 1;
        var sum = coefficients[0];
        var t = x + 7.5;
        for (var i = 1; i < coefficients.Length; i++) sum += coefficients[i] / (x + i);
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(sum);
    }
}
