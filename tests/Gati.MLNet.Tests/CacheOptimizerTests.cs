using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Policy;
using Gati.MLNet.Training;

namespace Gati.MLNet.Tests;

public sealed class CacheOptimizerTests
{
    /// <summary>
    /// A three-block model (input to cut point 1: 1.1 ms, then 1 ms per cut point, head 0.1 ms: 3.2 ms in full) and 100 held-out rows.
    /// Candidate A on layer 1 (0.2 ms, 1 MB) exits rows 0-49 and is wrong on row 0; candidate B on layer 2 (0.2 ms, 1 MB)
    /// exits rows 0-79 and is always right.
    /// </summary>
    private static CacheMeasurements Synthetic(long cacheBytes = 1 << 20, long baseBytes = 0)
    {
        const int rows = 100;
        var candidates = new[]
        {
            new CacheCandidate(0, 1, PredictorArchitecture.Conv(), 0.5, 0.98, 0.2, 0.2, cacheBytes),
            new CacheCandidate(1, 2, PredictorArchitecture.FC(16), 0.8, 1.0, 0.2, 0.2, cacheBytes),
        };
        var exits = new[] { Enumerable.Range(0, rows).Select(r => r < 50).ToArray(), Enumerable.Range(0, rows).Select(r => r < 80).ToArray() };
        var correct = new[] { Enumerable.Range(0, rows).Select(r => r != 0).ToArray(), Enumerable.Repeat(true, rows).ToArray() };
        double[] parts = [1.1, 1, 1, 0.1];
        return new CacheMeasurements(candidates, exits, correct, parts, parts, 1, "cpu", baseParameterBytes: baseBytes);
    }

    /// <summary>
    /// Two thresholds of one cache on layer 1 and a cache on layer 2 (three parts of 1 ms, no head; caches 0.1 ms), 100 rows:
    /// the loose layer-1 threshold exits rows 0-59 and is wrong on rows 40 and 41, the strict one exits rows 0-29 and is
    /// always right; layer 2 has a loose threshold that exits rows 30-99 and is wrong on row 95, and a strict one that exits
    /// rows 30-34, always right.
    /// </summary>
    private static CacheMeasurements TwoThresholds()
    {
        const int rows = 100;
        bool[] Rows(Func<int, bool> f) => Enumerable.Range(0, rows).Select(f).ToArray();
        var candidates = new[]
        {
            new CacheCandidate(0, 1, PredictorArchitecture.Conv(), 0.6, 58 / 60.0, 0.1, 0.1, 1, 0.5f, 0.97),
            new CacheCandidate(1, 1, PredictorArchitecture.Conv(), 0.3, 1.0, 0.1, 0.1, 1, 0.9f, 0.999),
            new CacheCandidate(2, 2, PredictorArchitecture.Conv(), 0.7, 69 / 70.0, 0.1, 0.1, 1, 0.8f, 0.99),
            new CacheCandidate(3, 2, PredictorArchitecture.Conv(), 0.05, 1.0, 0.1, 0.1, 1, 0.95f, 0.999),
        };
        var exits = new[] { Rows(r => r < 60), Rows(r => r < 30), Rows(r => r >= 30), Rows(r => r is >= 30 and < 35) };
        var correct = new[] { Rows(r => r is not (40 or 41)), Rows(_ => true), Rows(r => r != 95), Rows(_ => true) };
        double[] parts = [1, 1, 1, 0];
        return new CacheMeasurements(candidates, exits, correct, parts, parts, 1, "cpu");
    }

    [Fact]
    public void Choose_BeyondExhaustiveSearch_MovesFindThePlanGreedyMisses()
    {
        // Greedy takes the loose layer-1 threshold alone (60 rows at 1.1 ms, 40 at 3.1 ms: 1.90 ms, 98 % agreement) and can
        // add nothing more; so do the best plans of one strictness rank (strict: 2.50 ms; loose: the same 1.90 ms). The
        // strict layer-1 threshold with the loose layer-2 one (30 rows at 1.1 ms, 70 at 2.2 ms: 1.87 ms, 99 %) needs a move
        // that changes two layers at once.
        var constraints = new CacheConstraints(MinimumAgreement: 0.98);
        var exhaustive = CacheOptimizer.Choose(TwoThresholds(), constraints);
        Assert.StartsWith("exhaustive", exhaustive.Search);
        Assert.Equal([1, 2], exhaustive.Chosen.Select(c => c.Index));
        Assert.Equal("exhaustive over 9 plans", exhaustive.Search);
        Assert.Equal(1.87, exhaustive.ExpectedMs, 6);

        var searched = CacheOptimizer.Choose(TwoThresholds(), constraints, exhaustiveLimit: 8);
        Assert.StartsWith("greedy and 2 single-rank plans as starting points, then moves", searched.Search);
        Assert.Equal([1, 2], searched.Chosen.Select(c => c.Index));
        Assert.Equal(1.87, searched.ExpectedMs, 6);
        Assert.Equal(0.99, searched.ExpectedAgreement, 6);
        Assert.Contains("layer 1 Conv(3, 1) (threshold 0.9, calibrated precision 99.9 %)", searched.Explanation);
    }

    [Fact]
    public void Choose_StrictAgreement_KeepsOnlyTheCacheThatNeverErrs()
    {
        var plan = CacheOptimizer.Choose(Synthetic(), new CacheConstraints(MinimumAgreement: 0.995));
        Assert.Equal([2], plan.Chosen.Select(c => c.Layer));
        // 80 rows pay stem + 2 blocks + the cache (2.3 ms); 20 rows also pay block 3 and the head (3.4 ms).
        Assert.Equal(2.52, plan.ExpectedMs, 6);
        Assert.Equal(3.2, plan.FullMs, 6);
        Assert.Equal(1.0, plan.ExpectedAgreement, 6);
        Assert.Equal(0.8, plan.ExpectedHitRate, 6);
    }

    [Fact]
    public void Choose_LooserAgreement_TakesBothCaches()
    {
        var plan = CacheOptimizer.Choose(Synthetic(), new CacheConstraints(MinimumAgreement: 0.98));
        Assert.Equal([1, 2], plan.Chosen.Select(c => c.Layer));
        // 50 rows exit at layer 1 (1.3 ms), 30 at layer 2 (2.5 ms), 20 run to the end (3.6 ms).
        Assert.Equal(2.12, plan.ExpectedMs, 6);
        Assert.Equal(0.99, plan.ExpectedAgreement, 6);
        Assert.Equal(3.2 / 2.12, plan.ExpectedSpeedup, 6);
        Assert.Contains("layer 1 Conv(3, 1), layer 2 FC(16)", plan.Explanation);
    }

    [Fact]
    public void Choose_WithConfidence_TheExactLowerBoundMustReachTheTarget()
    {
        // At 96 %, both caches agree on 99 of 100 rows as a point estimate; the exact 95 % lower bound of 99/100 is 95.3 %,
        // of 100/100 it is 0.05^(1/100) = 97.0 %: only layer 2 alone keeps the target with confidence.
        var point = CacheOptimizer.Choose(Synthetic(), new CacheConstraints(MinimumAgreement: 0.96));
        Assert.Equal([1, 2], point.Chosen.Select(c => c.Layer));
        Assert.InRange(point.AgreementLowerBound, 0.95, 0.96);

        var sure = CacheOptimizer.Choose(Synthetic(), new CacheConstraints(MinimumAgreement: 0.96, Confidence: 0.95));
        Assert.Equal([2], sure.Chosen.Select(c => c.Layer));
        Assert.Equal(Math.Pow(0.05, 1.0 / 100), sure.AgreementLowerBound, 9);
        // No disagreement among 80 exits: the exact upper bound of the disagreement rate is 1 - 0.05^(1/80).
        Assert.Equal(1 - Math.Pow(0.05, 1.0 / 80), sure.DisagreementAmongExitsUpperBound, 9);
        Assert.Contains("at 95 % confidence (exact lower bound)", sure.Explanation);
        Assert.Contains("agreement at least 97.05 %", sure.Explanation);

        Assert.Throws<ArgumentOutOfRangeException>(() => CacheOptimizer.Choose(Synthetic(), new CacheConstraints(Confidence: 0.3)));
    }

    [Fact]
    public void Choose_MemoryBudget_ExcludesPlansOverIt()
    {
        var plan = CacheOptimizer.Choose(Synthetic(), new CacheConstraints(MinimumAgreement: 0.98, MemoryBudgetBytes: 1 << 20));
        Assert.Single(plan.Chosen);
        Assert.True(plan.MemoryBytes <= 1 << 20);
    }

    [Fact]
    public void Choose_OracleSelectors_ExitWhereverThePredictorAgrees()
    {
        // With oracles, A exits rows 1-99 at layer 1 (1.3 ms) and B takes row 0 at layer 2 (2.5 ms): 1.312 ms, all agreeing.
        var plan = CacheOptimizer.Choose(Synthetic(), new CacheConstraints(MinimumAgreement: 0.995));
        var oracle = Assert.IsType<CachePlan>(plan.Oracle);
        Assert.Equal([1, 2], oracle.Chosen.Select(c => c.Layer));
        Assert.Equal(1.312, oracle.ExpectedMs, 6);
        Assert.Equal(1.0, oracle.ExpectedAgreement, 9);
        Assert.Equal(1.0, oracle.ExpectedHitRate, 9);
        Assert.Null(oracle.Oracle);
        Assert.Contains("With oracle selectors", plan.Explanation);
        Assert.Contains("1.312 ms (2.44x)", plan.Explanation);
        // The predictor agreement column is the predictor's, not the selector's: A agrees on 99 of 100 rows.
        Assert.Contains("| 1 | Conv(3, 1) | - | 99.00 % | 50.0 % |", plan.Explanation);
    }

    [Fact]
    public void Choose_NoBudgetGiven_FollowsTheBaseModelsMemory()
    {
        // 40 MB caches: both fit 64 MB only one at a time; a 100 MB base model lifts the default budget to 100 MB.
        const long cache = 40L << 20;
        var small = CacheOptimizer.Choose(Synthetic(cache, baseBytes: 1 << 20), new CacheConstraints(MinimumAgreement: 0.98));
        Assert.Single(small.Chosen);
        Assert.Contains("cache memory <= 64.0 MB (default", small.Explanation);
        var large = CacheOptimizer.Choose(Synthetic(cache, baseBytes: 100L << 20), new CacheConstraints(MinimumAgreement: 0.98));
        Assert.Equal([1, 2], large.Chosen.Select(c => c.Layer));
        var unlimited = CacheOptimizer.Choose(Synthetic(cache, baseBytes: 1 << 20), new CacheConstraints(MinimumAgreement: 0.98, MemoryBudgetBytes: long.MaxValue));
        Assert.Equal(2, unlimited.Chosen.Count);
        Assert.Equal(64L << 20, CacheOptimizer.DefaultMemoryBudget(0));
    }

    [Fact]
    public void Choose_NothingHelps_ReturnsTheFullModel()
    {
        var plan = CacheOptimizer.Choose(Synthetic(), new CacheConstraints(MinimumAgreement: 1.0, MemoryBudgetBytes: 0));
        Assert.Empty(plan.Chosen);
        Assert.Equal(plan.FullMs, plan.ExpectedMs);
        Assert.Contains("the plan is the full model", plan.Explanation);
    }

    [Fact]
    public void Calibrate_FindsTheLowestThresholdMeetingThePrecisionTarget()
    {
        // Probabilities 0.99..0.00; the top 60 rows are right except rows 10 and 55.
        var p = Enumerable.Range(0, 100).Select(i => 1f - i / 100f).ToArray();
        var correct = Enumerable.Range(0, 100).Select(i => i < 60 && i != 10 && i != 55).ToArray();
        var c = ExitCalibration.Calibrate(p, correct, targetPrecision: 0.965, minimumHits: 5);
        // Prefix of 59 rows: 57 right (96.6%); 60 rows: 58 right (96.7%); 61 rows: 58 right (95.1%).
        Assert.Equal(p[59], c.Threshold);
        Assert.Equal(58 / 60.0, c.Precision, 6);
        Assert.Equal(0.6, c.HitRate, 6);
        Assert.Equal(1.0, c.Recall, 6);
        Assert.Equal(0.58, c.PredictorAgreement, 6);
    }

    [Fact]
    public void Calibrate_TargetOutOfReach_NeverExits()
    {
        var c = ExitCalibration.Calibrate([0.9f, 0.8f, 0.7f], [false, true, true], targetPrecision: 0.99, minimumHits: 1);
        Assert.True(c.NeverExits);
        Assert.Equal(0, c.HitRate);
    }

    [Fact]
    public void Calibrate_TiedProbabilities_AreNeverSplit()
    {
        // Two rows tie at 0.9, one right and one wrong: taking the tie gives 50%, so the threshold must stay above it.
        var c = ExitCalibration.Calibrate([0.95f, 0.9f, 0.9f], [true, true, false], targetPrecision: 0.9, minimumHits: 1);
        Assert.Equal(0.95f, c.Threshold);
        Assert.Equal(1.0 / 3, c.HitRate, 6);
    }

    [Fact]
    public void ForPrecision_FromTheCurve_MatchesCalibratingAgainForThatTarget()
    {
        var random = new Random(4);
        var p = Enumerable.Range(0, 3000).Select(_ => (float)random.NextDouble()).ToArray();
        var correct = p.Select(v => random.NextDouble() < 0.7 + 0.3 * v).ToArray();
        var loose = ExitCalibration.Calibrate(p, correct, 0.9);
        Assert.True(loose.Curve.Count <= 256);
        foreach (var target in new[] { 0.92, 0.95, 0.97 })
        {
            var direct = ExitCalibration.Calibrate(p, correct, target);
            var fromCurve = loose.ForPrecision(target);
            Assert.True(fromCurve.Precision >= target);
            // The curve is downsampled: its threshold can only be as permissive as the exact one, and close to it.
            Assert.True(fromCurve.Threshold >= direct.Threshold);
            Assert.InRange(fromCurve.HitRate, direct.HitRate - 0.02, direct.HitRate);
        }
        Assert.True(loose.ForPrecision(1.0).NeverExits || loose.ForPrecision(1.0).Precision == 1.0);
    }
}
