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
/// Unhealthy while the server drains before stopping; healthy while a model generation serves; degraded when the last reload failed, or (online caches) when live agreement
/// is below the target even at its upper confidence bound.
/// </summary>
internal sealed class ModelHealthCheck(EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction> pool, ShutdownDrain drain) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (drain.Draining) return Task.FromResult(HealthCheckResult.Unhealthy("shutting down: draining requests before the server stops"));
        var status = pool.GetStatus();
        var data = new Dictionary<string, object>
        {
            ["generation"] = status.Generation, ["source"] = status.Source, ["caches"] = string.Join(",", status.CacheLayers), ["device"] = status.Device,
            ["backend"] = status.Backend,
        };
        if (status.LastError is not null) return Task.FromResult(HealthCheckResult.Degraded($"the last reload failed: {status.LastError}", data: data));
        if (status.Online is { } online)
        {
            var live = online.Agreement;
            data["liveAgreement"] = live.Requests == 0 ? "no sampled requests yet" : $"{live.Estimate:P2} ({live.Agreed}/{live.Requests}; {live.Confidence:P0} bounds {live.Lower:P2} - {live.Upper:P2})";
            data["thresholds"] = string.Join(",", online.Thresholds.Select(t => float.IsFinite(t) ? t.ToString("G4", CultureInfo.InvariantCulture) : "off"));
            data["updates"] = $"{online.UpdatesAccepted} accepted, {online.UpdatesRejected} rejected";
            data["reactions"] = online.Reactions;
            if (online.LastReaction is { } reaction) data["lastReaction"] = reaction;
            // The pool has already reacted (thresholds raised) when this is seen; it says the promise is under watch.
            if (live.Requests > 0 && live.Upper < online.AgreementTarget)
                return Task.FromResult(HealthCheckResult.Degraded($"live agreement {live.Estimate:P2} is below the target even at its upper bound", data: data));
        }
        return Task.FromResult(HealthCheckResult.Healthy($"model generation {status.Generation} loaded ({status.Source})", data));
    }
}
