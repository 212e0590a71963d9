namespace Gati.Extensions.ML.Tests.Infrastructure;

/// <summary>
/// A <see cref="TimeProvider"/> that stands still until a test advances it; its timers fire only then. Registered in a
/// pool's services, it lets tests hold a micro-batch open for as long as they need and see when the batcher starts to
/// wait (<see cref="WhenArmedAsync"/>), instead of sleeping and hoping.
/// </summary>
public sealed class ManualClock : TimeProvider
{
    private readonly object _gate = new();
    private readonly List<Timer> _timers = [];
    private readonly DateTimeOffset _start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private TaskCompletionSource _armed = NewSignal();
    private long _ticks;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp()
    {
        lock (_gate) return _ticks;
    }

    public override DateTimeOffset GetUtcNow() => _start.AddTicks(GetTimestamp());

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new Timer(this, callback, state);
        lock (_gate) _timers.Add(timer);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Completes when some timer is set to fire (at once if one is): e.g. a batcher waiting for company.</summary>
    public Task WhenArmedAsync()
    {
        lock (_gate) return _timers.Any(t => t.Due is not null) ? Task.CompletedTask : _armed.Task;
    }

    /// <summary>Moves time on and fires the timers that fall due (outside the clock's lock, in due order).</summary>
    public void Advance(TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        List<Timer> due;
        lock (_gate)
        {
            _ticks += by.Ticks;
            due = _timers.Where(t => t.Due <= _ticks).OrderBy(t => t.Due).ToList();
            foreach (var timer in due) timer.Due = timer.Period is { } period ? _ticks + period : null;
        }
        foreach (var timer in due) timer.Fire();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private sealed class Timer(ManualClock clock, TimerCallback callback, object? state) : ITimer
    {
        public long? Due { get; set; }

        public long? Period { get; private set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            TaskCompletionSource? armed = null;
            lock (clock._gate)
            {
                Due = dueTime == Timeout.InfiniteTimeSpan ? null : clock._ticks + dueTime.Ticks;
                Period = period == Timeout.InfiniteTimeSpan || period == TimeSpan.Zero ? null : period.Ticks;
                if (Due is not null)
                {
                    armed = clock._armed;
                    clock._armed = NewSignal();
                }
            }
            armed?.TrySetResult();
            // Like a real timer, one due now fires at once.
            if (dueTime == TimeSpan.Zero) ThreadPool.QueueUserWorkItem(_ => Fire());
            return true;
        }

        public void Fire() => callback(state);

        public void Dispose()
        {
            lock (clock._gate) clock._timers.Remove(this);
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
