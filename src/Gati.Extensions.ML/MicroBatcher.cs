using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Gati.Extensions.ML;

/// <summary>
/// Gathers concurrent requests for one model into engine batches: the loop takes the first waiting request, then
/// whatever else is queued (waiting up to the batch delay for more), up to the batch size, and runs them in one
/// engine call on the current generation. A bounded queue applies back-pressure instead of growing without limit.
/// </summary>
internal sealed class MicroBatcher<TInput, TOutput> : IAsyncDisposable where TInput : class where TOutput : class, new()
{
    private readonly ModelEntry<TInput, TOutput> _entry;
    private readonly EarlyExitPoolOptions _options;
    private readonly ServingMetrics _metrics;
    private readonly ILogger _logger;
    private readonly Channel<Request> _queue = Channel.CreateBounded<Request>(new BoundedChannelOptions(4096)
    {
        SingleReader = true,
        FullMode = BoundedChannelFullMode.Wait,
    });
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    private sealed record Request(TInput Input, TaskCompletionSource<TOutput> Result, CancellationToken Cancellation);

    public MicroBatcher(ModelEntry<TInput, TOutput> entry, EarlyExitPoolOptions options, ServingMetrics metrics, ILogger logger)
    {
        _entry = entry;
        _options = options;
        _metrics = metrics;
        _logger = logger;
        _loop = Task.Run(RunAsync);
    }

    public async Task<TOutput> EnqueueAsync(TInput input, CancellationToken cancellation)
    {
        var result = new TaskCompletionSource<TOutput>(TaskCreationOptions.RunContinuationsAsynchronously);
        await _queue.Writer.WriteAsync(new Request(input, result, cancellation), cancellation).ConfigureAwait(false);
        using (cancellation.Register(() => result.TrySetCanceled(cancellation)))
            return await result.Task.ConfigureAwait(false);
    }

    private async Task RunAsync()
    {
        var reader = _queue.Reader;
        var batch = new List<Request>(_options.MaxBatchSize);
        try
        {
            while (await reader.WaitToReadAsync(_stop.Token).ConfigureAwait(false))
            {
                batch.Clear();
                while (batch.Count < _options.MaxBatchSize && reader.TryRead(out var request))
                    if (!request.Cancellation.IsCancellationRequested) batch.Add(request);
                if (batch.Count < _options.MaxBatchSize && _options.MaxBatchDelayMs > 0 && batch.Count > 0)
                {
                    using var wait = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                    wait.CancelAfter(TimeSpan.FromMilliseconds(_options.MaxBatchDelayMs));
                    try
                    {
                        while (batch.Count < _options.MaxBatchSize && await reader.WaitToReadAsync(wait.Token).ConfigureAwait(false))
                            while (batch.Count < _options.MaxBatchSize && reader.TryRead(out var request))
                                if (!request.Cancellation.IsCancellationRequested) batch.Add(request);
                    }
                    catch (OperationCanceledException) when (!_stop.IsCancellationRequested)
                    {
                        // The batch delay is over.
                    }
                }
                if (batch.Count > 0) Run(batch);
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        while (reader.TryRead(out var left)) left.Result.TrySetException(new ObjectDisposedException("The prediction pool was disposed."));
    }

    private void Run(List<Request> batch)
    {
        var generation = _entry.Acquire();
        try
        {
            var outputs = PoolPrediction.Run(generation, _entry.Name, batch.Select(r => r.Input).ToArray(), _metrics);
            for (var i = 0; i < batch.Count; i++) batch[i].Result.TrySetResult(outputs[i]);
        }
        catch (Exception ex)
        {
            // Usually bad input in one request (wrong size, NaN): retry one by one so only that request fails.
            if (batch.Count > 1 && ex is ArgumentException)
            {
                foreach (var request in batch)
                {
                    try
                    {
                        request.Result.TrySetResult(PoolPrediction.Run(generation, _entry.Name, [request.Input], _metrics)[0]);
                    }
                    catch (Exception single)
                    {
                        request.Result.TrySetException(single);
                    }
                }
            }
            else
            {
                if (ex is not ArgumentException) _logger.LogError(ex, "Prediction batch of {Count} failed for model '{Model}'.", batch.Count, _entry.Name);
                foreach (var request in batch) request.Result.TrySetException(ex);
            }
        }
        finally
        {
            generation.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _loop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        _stop.Dispose();
    }
}
