using Gati.MLNet.Inference.Backends;

namespace Gati.MLNet.Tests;

/// <summary>How the engine judges a threading setting from timed calls (<see cref="ThreadingChoice.Fast"/>).</summary>
public sealed class ThreadingChoiceTests
{
    [Fact]
    public void Fast_JudgesASettingByItsFastestFifth_SoABurstOfOtherLoadDoesNotDecide()
    {
        // 25 alternating calls each; from the 11th on, other load takes one of the 2 cores: a one-thread call keeps its
        // core (41 ms instead of 39), a two-thread call waits for the other (36 ms instead of 20), in shuffled order.
        var random = new Random(3);
        var one = Enumerable.Repeat(39.0, 10).Concat(Enumerable.Repeat(41.0, 15)).OrderBy(_ => random.Next()).ToArray();
        var two = Enumerable.Repeat(20.0, 10).Concat(Enumerable.Repeat(36.0, 15)).OrderBy(_ => random.Next()).ToArray();
        double Median(double[] times) => times.Order().ElementAt(times.Length / 2);
        // By medians two threads would not look 15 % faster.
        Assert.False(Median(two) < 0.85 * Median(one));
        var order = one.ToArray();
        Assert.Equal(39.0, ThreadingChoice.Fast(one));
        Assert.Equal(20.0, ThreadingChoice.Fast(two));
        Assert.True(ThreadingChoice.Fast(two) < 0.85 * ThreadingChoice.Fast(one));
        // The caller's times are left in their order; of ten calls, the third fastest stands for the setting.
        Assert.Equal(order, one);
        Assert.Equal(3.0, ThreadingChoice.Fast([9, 8, 7, 6, 5, 4, 3, 2, 1, 10]));
    }
}
