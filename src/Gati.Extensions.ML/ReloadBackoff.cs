namespace Gati.Extensions.ML;

/// <summary>
/// A model's failed loads: how many, the last error, and when the next attempt runs (the delay doubles with each
/// consecutive failure, up to <see cref="EarlyExitPoolOptions.MaxRetryDelayMs"/>); a success resets it.
/// </summary>
internal sealed class ReloadBackoff : IDisposable
{
    private readonly EarlyExitPoolOptions _options;
    private readonly Timer _retry;
    private int _failed;
    private int _consecutive;
    private string? _lastError;
    // UTC ticks (0: none), read by status calls on other threads: whole values, never torn.
    private long _nextRetryTicks;

    /// <param name="options">Retry delays.</param>
    /// <param name="retry">Runs on a timer thread when an attempt is due.</param>
    public ReloadBackoff(EarlyExitPoolOptions options, Action retry)
    {
        _options = options;
        _retry = new Timer(_ => retry(), null, Timeout.Infinite, Timeout.Infinite);
    }

    /// <summary>Failed loads since the model was created (a success does not reset it).</summary>
    public int Failed => Volatile.Read(ref _failed);

    /// <summary>The last load error ("Type: message"), or null after a success.</summary>
    public string? LastError => _lastError;

    public DateTimeOffset? NextRetryAt
    {
        get => Volatile.Read(ref _nextRetryTicks) is var t && t != 0 ? new DateTimeOffset(t, TimeSpan.Zero) : null;
        private set => Volatile.Write(ref _nextRetryTicks, value?.UtcTicks ?? 0);
    }

    /// <summary>" (attempt N failed; next attempt at …)" while an attempt is scheduled, else "".</summary>
    public string RetryText() => NextRetryAt is { } at
        ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $" (attempt {_failed} failed; next attempt at {at:HH:mm:ss} UTC)")
        : "";

    /// <summary>Counts a failed load (called under the reload lock or from the constructor); returns the failures so far and the delay before the next attempt.</summary>
    public (int Failures, TimeSpan Delay) Record(Exception ex)
    {
        var failures = Interlocked.Increment(ref _failed);
        var consecutive = ++_consecutive;
        var delay = TimeSpan.FromMilliseconds(Math.Min(_options.MaxRetryDelayMs, _options.RetryDelayMs * Math.Pow(2, Math.Min(30, consecutive - 1))));
        _lastError = $"{ex.GetType().Name}: {ex.Message}";
        NextRetryAt = DateTimeOffset.UtcNow + delay;
        return (failures, delay);
    }

    /// <summary>Runs the retry after <paramref name="delay"/>.</summary>
    public void Schedule(TimeSpan delay)
    {
        try
        {
            _retry.Change(delay, Timeout.InfiniteTimeSpan);
        }
        catch (ObjectDisposedException)
        {
            // Disposed meanwhile: nothing to retry for.
        }
    }

    /// <summary>A load succeeded: no error, no attempt pending.</summary>
    public void Succeeded()
    {
        _lastError = null;
        _consecutive = 0;
        NextRetryAt = null;
        try
        {
            _retry.Change(Timeout.Infinite, Timeout.Infinite);
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public void Dispose() => _retry.Dispose();
}
