using System.Diagnostics;

namespace Gati.MLNet.Online;

/// <summary>Keeps background work within a share of one core: after each step, sleeps in proportion to the step's time.</summary>
internal sealed class CpuThrottle(double budget, Action? beforeStep = null)
{
    /// <summary>Time spent working (not sleeping) so far.</summary>
    public TimeSpan Busy { get; private set; }

    public void Step(Action work)
    {
        beforeStep?.Invoke();
        var start = Stopwatch.GetTimestamp();
        work();
        var elapsed = Stopwatch.GetElapsedTime(start);
        Busy += elapsed;
        if (budget < 1) Thread.Sleep(TimeSpan.FromTicks((long)(elapsed.Ticks * (1 / budget - 1))));
    }
}
