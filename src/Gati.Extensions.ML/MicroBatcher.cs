using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Gati.Extensions.ML;

/// <summary>
/// Gathers concurrent requests for one model into engine batches. Each request holds the model generation it was
/// made on (so input prepared for one generation is never run on the next); the loop takes the first waiting request,
/// then whatever else is queued for the same generation, waiting until the first request is
/// <see cref="EarlyExitPoolOptions.MaxBatchDelayMs"/> old (measured on the clock, not left to a timer's resolution),
/// up to the batch size, and runs them in one engine call. A bounded queue applies back-pressure. Disposing completes
/// every request not yet run with an <see cref="ObjectDisposedException"/>.
/// </summary>
internal sealed class MicroBatcher<TInput, TOutput> : IAsyncDisposable where TInput : class where TOutput : class, new()
{
    private readonly string _name;
    private readonly string _owner;
    private readonly EarlyExitPoolOptions _options;
    private readonly ServingMetrics _metrics;
    private readonly ILogger _logger;
    private readonly TimeProvider _clock;
    private readonly long _delayTicks;
    private readonly Channel<Request> _queue;
    private readonly CancellationTokenSource _stop = new();
    // One timer for the batcher's life, re-armed for each batch that waits for company (no timer or token source per batch).
    private readonly ITimer _deadline;
    private TaskCompletionSource _deadlinePassed = NewSignal();
    private readonly Task _loop;
    private volatile bool _disposing;

    private sealed record Request(TInput Input, ModelGeneration<TInput, TOutput> Generation, TaskCompletionSource<TOutput> Result, long Arrived);

    /// <param name="name">The model's name (metrics, logs).</param>
    /// <param name="owner">The pool, as disposal errors name it.</param>
    /// <param name="options">Batch size and delay.</param>
    /// <param name="metrics">Where batches are recorded.</param>
    /// <param name="logger">Where failed batches are logged.</param>
    /// <param name="clock">The clock of the batch delay (tests stop it).</param>
    public MicroBatcher(string name, string owner, EarlyExitPoolOptions options, ServingMetrics metrics, ILogger logger, TimeProvider clock)
    {
        _name = name;
        _owner = owner;
        _options = options;
        _metrics = metrics;
        _logger = logger;
        _clock = clock;
        _delayTicks = (long)Math.Ceiling(options.MaxBatchDelayMs / 1000 * clock.TimestampFrequency);
        // Room for a few full batches, never fewer than one (a batch larger than the queue could never fill).
        _queue = Channel.CreateBounded<Request>(new BoundedChannelOptions(Math.Max(4096, 4 * options.MaxBatchSize))
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _deadline = clock.CreateTimer(static state => ((MicroBatcher<TInput, TOutput>)state!).OnDeadline(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _loop = Task.Run(RunAsync);
    }

    /// <summary>
    /// Queues a request on a generation the caller has acquired; the batcher releases that reference once the request
    /// is answered, cancelled or refused.
    /// </summary>
    public async Task<TOutput> EnqueueAsync(TInput input, ModelGeneration<TInput, TOutput> generation, CancellationToken cancellation)
    {
        var result = new TaskCompletionSource<TOutput>(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            await _queue.Writer.WriteAsync(new Request(input, generation, result, _clock.GetTimestamp()), cancellation).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            generation.Release();
            if (ex is ChannelClosedException && _disposing) throw Disposed();
            throw;
        }
        // Cancelled while waiting: the caller is released now; the batcher skips the request and releases its generation.
        using (cancellation.Register(() => result.TrySetCanceled(cancellation)))
            return await result.Task.ConfigureAwait(false);
    }

    private ObjectDisposedException Disposed() => new(_owner, $"The prediction pool was disposed before model '{_name}' answered the request.");

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private void OnDeadline() => Volatile.Read(ref _deadlinePassed).TrySetResult();

    private async Task RunAsync()
    {
        var reader = _queue.Reader;
        var batch = new List<Request>(_options.MaxBatchSize);
        Request? carried = null;
        Task<bool>? waitingForRequests = null;
        try
        {
            while (true)
            {
                if (carried is null)
                {
                    // A wait left pending by the last batch's delay is reused: one waiter at a time on the queue.
                    waitingForRequests ??= reader.WaitToReadAsync(_stop.Token).AsTask();
                    var any = await waitingForRequests.ConfigureAwait(false);
                    waitingForRequests = null;
                    if (!any) break;
                    if (!reader.TryRead(out carried)) continue;
                }
                batch.Add(carried);
                carried = null;
                var deadline = batch[0].Arrived + _delayTicks;
                while (batch.Count < _options.MaxBatchSize && carried is null)
                {
                    while (batch.Count < _options.MaxBatchSize && reader.TryRead(out var request))
                    {
                        // A reload happened between requests: this batch ends here, the next one starts on the new generation.
                        if (request.Generation != batch[0].Generation)
                        {
                            carried = request;
                            break;
                        }
                        batch.Add(request);
                    }
                    if (batch.Count == _options.MaxBatchSize || carried is not null) break;
                    var remaining = deadline - _clock.GetTimestamp();
                    if (remaining <= 0) break;
                    // Wake up for new requests or at the deadline; a timer that fires early only costs another look at the clock.
                    var deadlinePassed = NewSignal();
                    Volatile.Write(ref _deadlinePassed, deadlinePassed);
                    // Whole milliseconds, rounded up: a timer due "now" for a sub-millisecond rest would only spin.
                    _deadline.Change(TimeSpan.FromMilliseconds(Math.Ceiling(remaining * 1000.0 / _clock.TimestampFrequency)), Timeout.InfiniteTimeSpan);
                    waitingForRequests ??= reader.WaitToReadAsync(_stop.Token).AsTask();
                    var woken = await Task.WhenAny(waitingForRequests, deadlinePassed.Task).ConfigureAwait(false);
                    if (woken == waitingForRequests)
                    {
                        // False: the queue was closed (the pool is being disposed); cancelled: likewise (throws).
                        var more = await waitingForRequests.ConfigureAwait(false);
                        waitingForRequests = null;
                        if (!more) break;
                    }
                }
                _deadline.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                if (_disposing) break;
                Run(batch);
                batch.Clear();
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            // Not expected (Run never throws), but a dead loop must not leave callers waiting: refuse everything from now on.
            _queue.Writer.TryComplete(ex);
            LogFailure(ex, batch.Count);
            foreach (var request in batch) Refuse(request, ex);
            batch.Clear();
            if (carried is not null) Refuse(carried, ex);
            carried = null;
            while (reader.TryRead(out var left)) Refuse(left, ex);
            return;
        }
        // Disposed while collecting: nobody will run these; complete them so that no caller waits forever.
        // (Requests still queued are refused by DisposeAsync once no more can be written.)
        var disposed = Disposed();
        foreach (var request in batch) Refuse(request, disposed);
        if (carried is not null) Refuse(carried, disposed);
    }

    private static void Refuse(Request request, Exception error)
    {
        request.Result.TrySetException(error);
        request.Generation.Release();
    }

    /// <summary>Runs one batch on its generation and completes every request in it; never throws.</summary>
    private void Run(List<Request> batch)
    {
        try
        {
            _metrics.RecordBatchWait(_name, (double)(_clock.GetTimestamp() - batch[0].Arrived) * 1000 / _clock.TimestampFrequency);
            // Requests cancelled while they waited are not computed.
            var live = batch.Where(r => !r.Result.Task.IsCompleted).ToArray();
            if (live.Length == 0) return;
            var generation = live[0].Generation;
            try
            {
                var outputs = PoolPrediction.Run(generation, _name, live.Select(r => r.Input).ToArray(), _metrics);
                for (var i = 0; i < live.Length; i++) live[i].Result.TrySetResult(outputs[i]);
            }
            catch (ArgumentException) when (live.Length > 1)
            {
                // Usually bad input in one request (wrong size, NaN): retry one by one so only that request fails.
                foreach (var request in live)
                {
                    try
                    {
                        request.Result.TrySetResult(PoolPrediction.Run(generation, _name, [request.Input], _metrics)[0]);
                    }
                    catch (Exception single)
                    {
                        request.Result.TrySetException(single);
                    }
                }
            }
            catch (Exception ex)
            {
                foreach (var request in live) request.Result.TrySetException(ex);
                if (ex is not ArgumentException) LogFailure(ex, live.Length);
            }
        }
        finally
        {
            foreach (var request in batch) request.Generation.Release();
        }
    }

    private void LogFailure(Exception error, int count)
    {
        try
        {
            _logger.LogError(error, "Prediction batch of {Count} failed for model '{Model}'.", count, _name);
        }
        catch (Exception)
        {
            // A failing log sink must not end the loop: every later request would then wait forever.
        }
    }

    /// <summary>Stops the loop (a batch already running finishes) and refuses every request not yet run.</summary>
    public async ValueTask DisposeAsync()
    {
        _disposing = true;
        _queue.Writer.TryComplete();
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        // Only now can nothing more be written: what is left in the queue will never be read.
        var disposed = Disposed();
        while (_queue.Reader.TryRead(out var left)) Refuse(left, disposed);
        await _deadline.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
    }
}
