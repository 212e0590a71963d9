using Microsoft.Extensions.Options;

namespace Gati.Samples.WebApi;

/// <summary>
/// Graceful shutdown in two steps ("lame duck"). When the host is asked to stop (SIGTERM, Ctrl+C), the server first
/// keeps serving for <see cref="ServingOptions.DrainSeconds"/> while /health answers 503 (a load balancer takes the
/// instance out) and every response says <c>Connection: close</c> (clients stop reusing their keep-alive
/// connections); only then does Kestrel stop. Without it, Kestrel closes idle keep-alive connections at once, under
/// traffic a load balancer would already have moved elsewhere. A client that keeps sending to this server alone still
/// loses what it sends at the instant the server stops (docs/serving.md, and the soak run in docs/benchmarks.md).
/// </summary>
public sealed class ShutdownDrain(IOptions<ServingOptions> options, ILogger<ShutdownDrain> logger) : IHostedLifecycleService
{
    private volatile bool _draining;

    /// <summary>True once the host is stopping: responses close their connections and health reports it.</summary>
    public bool Draining => _draining;

    /// <summary>Runs before any hosted service (Kestrel included) stops: marks the drain and waits it out.</summary>
    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        _draining = true;
        var seconds = options.Value.DrainSeconds;
        if (seconds <= 0) return;
        logger.LogInformation("Stopping: draining for {Seconds} s (health 503, connections closed after each response).", seconds);
        try
        {
            await Task.Delay(TimeSpan.FromSeconds(seconds), cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // The host's shutdown timeout ended the drain early; stopping goes on.
        }
    }

    /// <summary>Adds <c>Connection: close</c> to every response started while draining.</summary>
    public Task CloseConnectionsWhileDraining(HttpContext context, RequestDelegate next)
    {
        context.Response.OnStarting(static state =>
        {
            var (drain, response) = ((ShutdownDrain, HttpResponse))state;
            if (drain._draining) response.Headers.Connection = "close";
            return Task.CompletedTask;
        }, (this, context.Response));
        return next(context);
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
