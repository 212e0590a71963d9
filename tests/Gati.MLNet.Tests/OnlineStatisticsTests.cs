using Gati.MLNet.Inference;
using Gati.MLNet.Online;
using Gati.MLNet.Policy;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

/// <summary>The pieces of continuously updated caches on constructed cases.</summary>
public sealed class OnlineStatisticsTests
{
    [Fact]
    public void ShadowWindow_RowsBeyondTheBudget_EvictTheOldestAndNeverExceedIt()
    {
        var window = new ShadowWindow(64 * 1024);
        var rows = Enumerable.Range(0, 100).Select(i =>
        {
            var row = new ShadowRow(i + 1, 0, 0, sampled: true, caches: 2);
            row.Features[0] = new float[1000];
            row.Features[1] = new float[500];
            return row;
        }).ToArray();
        foreach (var row in rows)
        {
            window.Add(row);
            Assert.True(window.Bytes <= window.BudgetBytes, $"{window.Bytes} bytes held");
        }
        var kept = window.Snapshot();
        Assert.Equal(kept.Length, window.Count);
        Assert.Equal(rows.TakeLast(kept.Length).Select(r => r.Sequence), kept.Select(r => r.Sequence));
        Assert.Equal(100 - kept.Length, window.Evicted);
        Assert.InRange(kept.Length, 9, 11); // 64 KB / ~6 KB per row
        Assert.Equal(kept.Where(r => r.Sequence > 95).Select(r => r.Sequence), window.Since(95).Select(r => r.Sequence));
    }

    [Fact]
    public void LiveAgreement_SlidingWindow_ForgetsOldOutcomesAndBoundsTheEstimate()
    {
        var live = new LiveAgreement([3, 6], windowSize: 100, confidence: 0.95);
        for (var i = 0; i < 100; i++) live.Add(0, agreed: false);
        for (var i = 0; i < 100; i++) live.Add(i % 2 == 0 ? 0 : -1, agreed: true);
        var snapshot = live.Snapshot([0.5f, 0.7f]);
        Assert.Equal(100, snapshot.Requests);
        Assert.Equal(100, snapshot.Agreed); // the failures slid out of the overall window
        Assert.Equal(100, snapshot.Layers[0].Exits);
        Assert.Equal(50, snapshot.Layers[0].Agreed); // but 50 of layer 3's last 100 exits were failures
        Assert.Equal(0, snapshot.Layers[1].Exits);
        Assert.True(snapshot.Lower is > 0.97 and < 1);
        // Exact bound of a perfect record: alpha^(1/n).
        Assert.Equal(Math.Pow(0.05, 1.0 / 100), snapshot.Lower, 9);
        Assert.Equal(AgreementBounds.ClopperPearsonUpper(50, 100, 0.95), snapshot.Layers[0].Upper, 12);
        live.Reset(0);
        Assert.Equal(0, live.Snapshot([0.5f, 0.7f]).Layers[0].Exits);
    }

    [Fact]
    public void Tighten_JudgesTheTargetByTheExactBound_NotWilsons()
    {
        // 900 captured rows, one cache; row i has P(hit) (i + 0.5) / 900 and its predictor is wrong on every 100th row
        // from row 50 (9 wrong rows). Raising the threshold past a wrong row's P(hit) sends it through the whole network
        // (which agrees). At 99 % and 95 % the exact bound allows 3 disagreements in 900 rows, Wilson's 4: the reaction
        // must keep the exits of no more than 3 wrong rows, so its threshold is just above row 550's P(hit).
        var rows = Enumerable.Range(0, 900).Select(i =>
        {
            var row = new ShadowRow(i + 1, 3, 0, sampled: true, caches: 1) { BaseProbabilities = [1f, 0f] };
            row.HitProbabilities[0] = (i + 0.5f) / 900;
            row.PredictedClasses[0] = i % 100 == 50 ? 1 : 0;
            return row;
        }).ToArray();
        Assert.Equal(3, AgreementBounds.AllowedDisagreements(900, 0.99, 0.95));
        Assert.True(AgreementBounds.WilsonAtConfidence(896, 900, 0.95).Lower >= 0.99); // Wilson would have stopped at row 450

        var threshold = CapturedRows.Tighten(rows, [0f], 0, target: 0.99, confidence: 0.95);

        Assert.Equal(MathF.BitIncrement(550.5f / 900), threshold);
        var (agreed, disagreements) = CapturedRows.Serve(rows, [threshold]);
        Assert.Equal(897, agreed);
        Assert.Equal(3, disagreements[0]);
        Assert.True(AgreementBounds.ClopperPearsonLower(agreed, rows.Length, 0.95) >= 0.99);
    }

    [Fact]
    public void Tighten_WithTheNewestRows_ClearsTheTargetOnThemToo()
    {
        // 1,800 captured rows, one cache; row i has P(hit) (i % 900 + 0.5) / 900. The older 900 all agree; among the newest 900
        // the predictor is wrong on every 100th row from row 50 of that half. Over all 1,800 rows the exact bound at 99 % and 95 %
        // allows 10 disagreements, so all 9 exits may stay (threshold unchanged); the newest half alone allows 3, as in the
        // test above, so with it the threshold must rise just past the 6th wrong row's P(hit).
        var rows = Enumerable.Range(0, 1800).Select(i =>
        {
            var row = new ShadowRow(i + 1, 3, 0, sampled: true, caches: 1) { BaseProbabilities = [1f, 0f] };
            row.HitProbabilities[0] = (i % 900 + 0.5f) / 900;
            row.PredictedClasses[0] = i >= 900 && i % 100 == 50 ? 1 : 0;
            return row;
        }).ToArray();
        var newest = rows[900..];
        Assert.Equal(10, AgreementBounds.AllowedDisagreements(1800, 0.99, 0.95));
        Assert.True(CapturedRows.Clear(rows, [0f], 0.99, 0.95));
        Assert.False(CapturedRows.Clear(newest, [0f], 0.99, 0.95));

        var threshold = CapturedRows.Tighten(rows, [0f], 0, target: 0.99, confidence: 0.95, newest);

        Assert.Equal(MathF.BitIncrement(550.5f / 900), threshold);
        Assert.True(CapturedRows.Clear(rows, [threshold], 0.99, 0.95));
        Assert.True(CapturedRows.Clear(newest, [threshold], 0.99, 0.95));
        Assert.Equal(3, CapturedRows.Serve(newest, [threshold]).Disagreements[0]);
    }

    [Fact]
    public void AcceptRule_FasterAndAgreeingOnAsManyRows_IsBetterEvenBelowTheTargetsPointEstimate()
    {
        // Fresh rows as in the imported ResNet-18's phased run: 152 rows, both sets of caches agree on 150 (98.68 %, below
        // 99 % as a point estimate; the serving caches' upper bound is above it, so they are not shown to miss it).
        SimulatedServing Served(int rows, int agreed, double ms) => new(rows, agreed, AgreementBounds.ClopperPearsonLower(agreed, rows, 0.95),
            AgreementBounds.ClopperPearsonUpper(agreed, rows, 0.95), ms, [], []);
        var now = Served(152, 150, 17.405);
        Assert.True(now.Upper >= 0.99);

        Assert.True(OnlineCaches.IsBetter(now, Served(152, 150, 16.290), 0.99)); // 6 % faster, as many rows agree
        Assert.False(OnlineCaches.IsBetter(now, Served(152, 150, 17.0), 0.99)); // 2 % faster: not worth a swap
        Assert.True(OnlineCaches.IsBetter(now, Served(152, 152, 17.0), 0.99)); // 2 % faster and two more rows agree: better on both counts
        Assert.True(OnlineCaches.IsBetter(now, Served(152, 151, 17.405), 0.99)); // as fast, one more row agrees
        Assert.False(OnlineCaches.IsBetter(now, Served(152, 152, 17.5), 0.99)); // more agreement, but slower: not while the target is not shown missed
        Assert.False(OnlineCaches.IsBetter(now, Served(152, 149, 12.0), 0.99)); // one row fewer, and below the target
        Assert.True(OnlineCaches.IsBetter(Served(200, 199, 17.4), Served(200, 198, 12.0), 0.99)); // one fewer, at the target (99.0 %)
        Assert.False(OnlineCaches.IsBetter(Served(200, 200, 17.4), Served(200, 198, 12.0), 0.99)); // two fewer

        // Serving caches shown below the target: only more agreement counts, whatever it costs.
        var missing = Served(300, 285, 15.0);
        Assert.True(missing.Upper < 0.99);
        Assert.True(OnlineCaches.IsBetter(missing, Served(300, 290, 20.0), 0.99));
        Assert.False(OnlineCaches.IsBetter(missing, Served(300, 285, 10.0), 0.99));
    }

    [Fact]
    public void Workloads_Phase_DrawsTheGivenClassesByZipfRankAndSaysWhatIsWrong()
    {
        var labels = Enumerable.Range(0, 1000).Select(i => (uint)(i % 10 + 1)).ToArray();
        var a = Workloads.Phase(labels, 6000, [7, 2, 5], popularShare: 0.9, seed: 2);
        Assert.Equal(a.Rows, Workloads.Phase(labels, 6000, [7, 2, 5], popularShare: 0.9, seed: 2).Rows);
        Assert.Equal([7, 2, 5], Assert.Single(a.PopularClasses));
        double Share(int c) => a.Rows.Count(r => labels[r] - 1 == c) / 6000.0;
        // Zipf weights 1, 1/2, 1/3 over 90 %: 49.1 %, 24.5 %, 16.4 %; the other seven classes 1.4 % each.
        Assert.InRange(Share(7), 0.46, 0.52);
        Assert.InRange(Share(2), 0.22, 0.27);
        Assert.InRange(Share(5), 0.14, 0.19);
        Assert.All(new[] { 0, 1, 3, 4, 6, 8, 9 }, c => Assert.InRange(Share(c), 0.005, 0.025));
        Assert.Contains("11", Assert.Throws<ArgumentException>(() => Workloads.Phase(labels, 100, [1, 11])).Message);
        Assert.Throws<ArgumentException>(() => Workloads.Phase(labels, 100, [1, 1]));
        Assert.Throws<ArgumentException>(() => Workloads.Phase(labels, 100, []));
    }

    [Fact]
    public void Workloads_Phased_IsSeededAndDominatedByEachPhasesClasses()
    {
        var labels = Enumerable.Range(0, 1000).Select(i => (uint)(i % 10 + 1)).ToArray();
        var a = Workloads.Phased(labels, 3000, 1000, popular: 3, popularShare: 0.9, seed: 4);
        var b = Workloads.Phased(labels, 3000, 1000, popular: 3, popularShare: 0.9, seed: 4);
        Assert.Equal(a.Rows, b.Rows);
        Assert.Equal(3, a.PopularClasses.Count);
        for (var phase = 0; phase < 3; phase++)
        {
            var classes = a.Rows.Where((_, i) => a.Phases[i] == phase).Select(r => (int)labels[r] - 1).ToArray();
            var share = classes.Count(c => a.PopularClasses[phase].Contains(c)) / (double)classes.Length;
            Assert.InRange(share, 0.86, 0.94);
            if (phase > 0) Assert.Empty(a.PopularClasses[phase].Intersect(a.PopularClasses[phase - 1]));
        }
        var uniform = Workloads.Uniform(labels, 5000, 1);
        Assert.All(Enumerable.Range(0, 10), c => Assert.InRange(uniform.Rows.Count(r => labels[r] - 1 == c), 400, 600));
    }

    [Fact]
    public void UpdateSplit_CalibratesOnEveryOtherSampledRowAndTrainsOnTheRest()
    {
        // A window as the phased stream fills it: a uniform sample, with full runs kept besides as training rows.
        var random = new Random(5);
        var rows = Enumerable.Range(0, 1000).Select(i =>
        {
            var fullRun = random.NextDouble() < 0.45;
            var sampled = !fullRun || random.NextDouble() < 0.5;
            return new ShadowRow(i + 1, fullRun ? 0 : 2, 0, sampled, caches: 1);
        }).ToArray();
        var (train, calibration) = Gati.MLNet.Online.CacheUpdater.Split(rows);

        // Every row in exactly one half, in order of arrival.
        Assert.Equal(rows.Length, train.Length + calibration.Length);
        Assert.Empty(train.Select(r => r.Sequence).Intersect(calibration.Select(r => r.Sequence)));
        Assert.Equal(train.OrderBy(r => r.Sequence), train);
        Assert.Equal(calibration.OrderBy(r => r.Sequence), calibration);
        // Calibration: every other row of the uniform sample, so its full-run share is the sample's, not the window's.
        var sampled = rows.Where(r => r.Sampled).ToArray();
        Assert.Equal(sampled.Where((_, i) => i % 2 == 1), calibration);
        Assert.All(rows.Where(r => !r.Sampled), r => Assert.Contains(r, train));
        double FullRuns(IEnumerable<ShadowRow> of) => of.Average(r => r.ExitLayer == 0 ? 1.0 : 0.0);
        Assert.InRange(FullRuns(calibration), FullRuns(sampled) - 0.05, FullRuns(sampled) + 0.05);
        Assert.True(FullRuns(rows) > FullRuns(sampled) + 0.1, $"{FullRuns(rows):P1} of the window ran the whole network, {FullRuns(sampled):P1} of the sample");
        // Both halves reach the newest traffic.
        Assert.True(rows[^1].Sequence - train[^1].Sequence < 5 && rows[^1].Sequence - calibration[^1].Sequence < 5);
    }

    [Fact]
    public void CalibrateJointly_KeepsTheWholeWithinTheDisagreementsAnExactBoundAllows()
    {
        // 500 rows, two caches; the first is right on rows with high P(hit) only. At 99 % with 95 % confidence the
        // exact bound allows 1 disagreement in 500 (2 would put the upper bound above 1 %).
        var random = new Random(3);
        var p1 = Enumerable.Range(0, 500).Select(_ => (float)random.NextDouble()).ToArray();
        var c1 = p1.Select(p => p > 0.3 || random.NextDouble() < 0.5).ToArray();
        var p2 = Enumerable.Range(0, 500).Select(_ => (float)random.NextDouble()).ToArray();
        var c2 = p2.Select(p => p > 0.8).ToArray();
        var calibrations = Gati.MLNet.Online.CacheUpdater.CalibrateJointly([(p1, c1), (p2, c2)], 0.99, 0.95);
        var disagreements = 0;
        for (var r = 0; r < 500; r++)
        {
            if (p1[r] >= calibrations[0].Threshold) { if (!c1[r]) disagreements++; }
            else if (p2[r] >= calibrations[1].Threshold && !c2[r]) disagreements++;
        }
        Assert.InRange(disagreements, 0, 1);
        Assert.True(AgreementBounds.ClopperPearsonUpper(disagreements, 500) <= 0.01);
        Assert.True(calibrations[0].HitRate > 0.6, $"the first cache should still exit most rows (got {calibrations[0].HitRate:P1})");
        Assert.True(AgreementBounds.ClopperPearsonUpper(2, 500) > 0.01);
    }

    [Fact]
    public void BackgroundPriority_LowersOnlyTheCallingThread()
    {
        if (!OperatingSystem.IsLinux()) return; // Thread.Priority does it elsewhere
        var before = BackgroundPriority.Current();
        int? inside = null;
        var lowered = false;
        var thread = new Thread(() =>
        {
            lowered = BackgroundPriority.Lower();
            inside = BackgroundPriority.Current();
        });
        thread.Start();
        thread.Join();
        Assert.True(lowered, "setpriority on the thread failed");
        Assert.Equal(BackgroundPriority.Nice, inside);
        Assert.Equal(before, BackgroundPriority.Current());
    }

    [Fact]
    public void CalibrateJointly_WithSegmentCosts_SpendsTheDisagreementsWhereTheyBuyTheMostAndKeepsTheBound()
    {
        // 2,000 rows. The first cache is right above P(hit) 0.95 and on 90 % of the rows below; the second is right
        // above 0.5 and on 98 % of the rows between 0.1 and 0.5. Greedy, the first cache spends the whole budget of
        // disagreements (about 10 rows exit per disagreement) and the second is left its sure rows; priced by cost, the
        // budget goes to the second (about 50 rows per disagreement) and more rows exit early overall.
        var random = new Random(11);
        const int Rows = 2000;
        var p1 = Enumerable.Range(0, Rows).Select(_ => (float)random.NextDouble()).ToArray();
        var c1 = p1.Select(p => p > 0.95 || random.NextDouble() < 0.9).ToArray();
        var p2 = Enumerable.Range(0, Rows).Select(_ => (float)random.NextDouble()).ToArray();
        var c2 = p2.Select(p => p > 0.5 || (p > 0.1 && random.NextDouble() < 0.98)).ToArray();
        double[] segments = [0.1, 0.1, 0.6];
        var greedy = Gati.MLNet.Online.CacheUpdater.CalibrateJointly([(p1, c1), (p2, c2)], 0.99, 0.95);
        var priced = Gati.MLNet.Online.CacheUpdater.CalibrateJointly([(p1, c1), (p2, c2)], 0.99, 0.95, segments);

        (double Cost, int Wrong) Serve(IReadOnlyList<ExitCalibration> calibrations)
        {
            double cost = 0;
            var wrong = 0;
            for (var r = 0; r < Rows; r++)
            {
                if (p1[r] >= calibrations[0].Threshold) { cost += 0.1; if (!c1[r]) wrong++; }
                else if (p2[r] >= calibrations[1].Threshold) { cost += 0.2; if (!c2[r]) wrong++; }
                else cost += 0.8;
            }
            return (cost / Rows, wrong);
        }
        var (greedyCost, greedyWrong) = Serve(greedy);
        var (pricedCost, pricedWrong) = Serve(priced);
        Assert.True(AgreementBounds.ClopperPearsonUpper(greedyWrong, Rows) <= 0.01);
        Assert.True(AgreementBounds.ClopperPearsonUpper(pricedWrong, Rows) <= 0.01, $"{pricedWrong} disagreements in {Rows}");
        Assert.True(pricedCost < greedyCost * 0.8, $"priced {pricedCost:F3} ms against greedy {greedyCost:F3} ms");
        Assert.Throws<ArgumentException>(() => Gati.MLNet.Online.CacheUpdater.CalibrateJointly([(p1, c1), (p2, c2)], 0.99, 0.95, [0.1, 0.1]));
    }
}
