using Gati.MLNet.Online;

namespace Gati.MLNet.Tests;

public sealed class ExitMixWatchTests
{
    // Shares of the whole network and of four caches: the imported ResNet-18's static caches over the phased stream
    // (docs/results/bench-workload-r18z5-2-phased.md), and one with as few early exits as they made after the change of
    // camera (19.6 %; 53.8 % before it).
    private static readonly double[] Phase = [0.455, 0.256, 0.066, 0.159, 0.064];
    private static readonly double[] BeforeCamera = Phase;
    private static readonly double[] AfterCamera = [0.80, 0.10, 0.03, 0.04, 0.03];

    private static int Draw(Random random, double[] shares)
    {
        var u = random.NextDouble();
        for (var e = 0; e < shares.Length - 1; e++)
        {
            u -= shares[e];
            if (u < 0) return e - 1;
        }
        return shares.Length - 2;
    }

    [Fact]
    public void Add_OneMixThroughout_NeverSeesAChange()
    {
        foreach (var mix in new[] { Phase, AfterCamera })
        {
            for (var seed = 0; seed < 20; seed++)
            {
                var random = new Random(seed);
                var watch = new ExitMixWatch(4);
                for (var i = 0; i < 4000; i++) Assert.Null(watch.Add(Draw(random, mix), i));
            }
        }
    }

    [Fact]
    public void Add_ChangeOfCamera_IsSeenWithinTwoHundredSampledRequestsAndDatedNearItsStart()
    {
        for (var seed = 0; seed < 20; seed++)
        {
            var random = new Random(seed);
            var watch = new ExitMixWatch(4);
            ExitMixChange? seen = null;
            for (var i = 0; i < 3000 && seen is null; i++) seen = watch.Add(Draw(random, i < 1000 ? BeforeCamera : AfterCamera), i);
            Assert.NotNull(seen);
            var change = seen.Value;
            Assert.InRange(change.Seen, 1000, 1200);
            Assert.Equal(0, change.Began % ExitMixWatch.BlockRows);
            Assert.InRange(change.Began, 1000 - ExitMixWatch.RecentBlocks * ExitMixWatch.BlockRows, 1000 + ExitMixWatch.BlockRows);
            Assert.True(change.Distance > ExitMixWatch.ChangedAbove);
        }
    }

    [Fact]
    public void Add_AfterAChangeOrReset_JudgesAgainOnlyOnceBothMixesAreFull()
    {
        var random = new Random(3);
        var watch = new ExitMixWatch(4);
        var full = (ExitMixWatch.RecentBlocks + ExitMixWatch.ReferenceBlocks) * ExitMixWatch.BlockRows;
        // Disjoint mixes that alternate every block would be a change at every judgement: none comes before the watch is full.
        int Alternating(int i) => i / ExitMixWatch.BlockRows % 2 == 0 ? -1 : 3;
        for (var i = 0; i < full - 1; i++) Assert.Null(watch.Add(Alternating(i), i));
        watch.Reset();
        for (var i = 0; i < full - 1; i++) Assert.Null(watch.Add(Draw(random, BeforeCamera), i));
        var index = full - 1;
        Assert.Null(watch.Add(Draw(random, BeforeCamera), index++));
        ExitMixChange? seen = null;
        while (seen is null) seen = watch.Add(-1, index++);
        // Seen once: the watch starts again from nothing.
        for (var i = 0; i < full - 1; i++) Assert.Null(watch.Add(Draw(random, BeforeCamera), index++));
    }

    [Fact]
    public void Add_ExitOutsideTheCaches_SaysWhichAreValid()
    {
        var watch = new ExitMixWatch(2);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => watch.Add(2, 0));
        Assert.Contains("-1 (the whole network) or a cache index below 2", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => watch.Add(-2, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ExitMixWatch(-1));
    }
}
