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
        builder.Services.AddHealthChecks().AddCheck<ModelHealthCheck>("model");
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(ServingMetrics.MeterName, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel")
            .AddPrometheusExporter());
        return builder;
    }
}

/// <summary>Healthy while a model generation serves; degraded when the last reload failed.</summary>
internal sealed class ModelHealthCheck(EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction> pool) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var status = pool.GetStatus();
        var data = new Dictionary<string, object> { ["generation"] = status.Generation, ["caches"] = string.Join(",", status.CacheLayers), ["device"] = status.Device, ["backend"] = status.Backend };
        return Task.FromResult(status.LastError is null
            ? HealthCheckResult.Healthy($"model generation {status.Generation} loaded", data)
            : HealthCheckResult.Degraded($"the last reload failed: {status.LastError}", data: data));
    }
}
