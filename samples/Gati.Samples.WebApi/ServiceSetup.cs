using System.Globalization;
using Gati.Extensions.ML;
using Gati.MLNet.Inference;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;

namespace Gati.Samples.WebApi;

/// <summary>Registers the sample's services: the early-exit pool, limits, ProblemDetails, health checks and metrics.</summary>
public static class ServiceSetup
{
    /// <summary>Everything Program.cs needs, configured from the "Gati" section.</summary>
    public static WebApplicationBuilder AddPredictionServices(this WebApplicationBuilder builder)
    {
        var section = builder.Configuration.GetSection("Gati");
        builder.Services.Configure<ServingOptions>(section);
        var serving = section.Get<ServingOptions>() ?? new ServingOptions();
        if (string.IsNullOrWhiteSpace(serving.ModelPath))
            throw new InvalidOperationException("Set Gati:ModelPath (appsettings.json or the Gati__ModelPath environment variable) to a model zip, e.g. out/demo/early-exit.zip from gati demo.");
        var modelPath = Path.GetFullPath(serving.ModelPath, builder.Environment.ContentRootPath);

        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = serving.MaxRequestBytes);
        builder.Services.AddProblemDetails();
        builder.Services.AddEarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction>()
            .FromFile(modelPath, serving.WatchForChanges)
            .Configure(section.GetSection("Pool"));
        // The pool is built (and the model loaded) as the host starts: a model that cannot be loaded stops the process with
        // the reason, unless Gati:Pool:StartupLoadFailure is KeepRetrying (then /health answers 503 with the reason).
        builder.Services.AddHostedService<ModelStartup>();
        builder.Services.AddSingleton<ShutdownDrain>();
        builder.Services.AddHostedService(services => services.GetRequiredService<ShutdownDrain>());
        builder.Services.AddHealthChecks().AddCheck<ModelHealthCheck>("model");
        builder.Services.AddSingleton<RequestMetrics>();
        builder.Services.AddSingleton<DecodingGate>();
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(ServingMetrics.MeterName, RequestMetrics.MeterName, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel", "System.Runtime")
            .AddPrometheusExporter());
        return builder;
    }
}

/// <summary>
/// Builds the prediction pool when the host starts, so that a model that cannot be loaded is known before the first
/// request: with the default <see cref="StartupLoadFailure.Throw"/> the host fails to start with the reason (logged, and
/// the process exits non-zero) instead of answering every request with a bare 500 while retrying the load each time.
/// </summary>
internal sealed class ModelStartup(IServiceProvider services) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        services.GetRequiredService<EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction>>();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>
/// Unhealthy while the server drains before stopping, or while no model generation could be loaded yet (KeepRetrying);
/// degraded when the last reload failed (retried with back-off; the previous generation serves), when the model file was
/// deleted, or (online caches) when live agreement is below the target even at its upper confidence bound; healthy while
/// a model generation serves. The description is the reason in words.
/// </summary>
internal sealed class ModelHealthCheck(EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction> pool, ShutdownDrain drain) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (drain.Draining) return Task.FromResult(HealthCheckResult.Unhealthy("shutting down: draining requests before the server stops"));
        var health = pool.GetHealth();
        var data = new Dictionary<string, object>
        {
            ["model"] = health.Name, ["generation"] = health.Generation, ["failedLoads"] = health.FailedLoads,
        };
        if (health.NextRetryAt is { } next) data["nextRetryAt"] = next;
        if (health.Warnings.Count > 0) data["warnings"] = health.Warnings;
        if (health.State == ModelState.Unavailable) return Task.FromResult(HealthCheckResult.Unhealthy(health.Reason, data: data));
        ModelStatus status;
        try
        {
            status = pool.GetStatus();
        }
        catch (ModelUnavailableException ex)
        {
            return Task.FromResult(HealthCheckResult.Unhealthy(ex.Message, data: data));
        }
        data["source"] = status.Source;
        data["caches"] = string.Join(",", status.CacheLayers);
        data["device"] = status.Device;
        data["backend"] = status.Backend;
        if (health.State == ModelState.Degraded) return Task.FromResult(HealthCheckResult.Degraded(health.Reason, data: data));
        if (status.Online is { } online)
        {
            var live = online.Agreement;
            data["liveAgreement"] = live.Requests == 0 ? "no sampled requests yet" : $"{live.Estimate:P2} ({live.Agreed}/{live.Requests}; {live.Confidence:P0} bounds {live.Lower:P2} - {live.Upper:P2})";
            data["thresholds"] = string.Join(",", online.Thresholds.Select(t => float.IsFinite(t) ? t.ToString("G4", CultureInfo.InvariantCulture) : "off"));
            data["updates"] = $"{online.UpdatesAccepted} accepted, {online.UpdatesRejected} rejected";
            data["reactions"] = online.Reactions;
            if (online.LastReaction is { } reaction) data["lastReaction"] = reaction;
            data["trafficChanges"] = online.TrafficChanges;
            // The pool has already reacted (thresholds raised) when this is seen; it says the promise is under watch.
            if (live.Requests > 0 && live.Upper < online.AgreementTarget)
                return Task.FromResult(HealthCheckResult.Degraded($"live agreement {live.Estimate:P2} is below the target even at its upper bound", data: data));
        }
        return Task.FromResult(HealthCheckResult.Healthy(health.Reason, data));
    }
}

/// <summary>
/// The body of /health: <c>{"status": "Healthy|Degraded|Unhealthy", "reason": "...", "model": "default", "generation": N, ...}</c>
/// (status code 200, or 503 when unhealthy).
/// </summary>
internal static class HealthResponse
{
    private static readonly System.Text.Json.JsonSerializerOptions Json = new(System.Text.Json.JsonSerializerDefaults.Web);

    public static Task WriteAsync(HttpContext context, HealthReport report)
    {
        var entry = report.Entries.Values.FirstOrDefault();
        var body = new Dictionary<string, object?>
        {
            ["status"] = report.Status.ToString(),
            ["reason"] = entry.Description ?? entry.Exception?.Message,
        };
        if (entry.Data is not null) foreach (var (key, value) in entry.Data) body[key] = value;
        context.Response.ContentType = "application/json; charset=utf-8";
        return context.Response.WriteAsync(System.Text.Json.JsonSerializer.Serialize(body, Json));
    }
}
