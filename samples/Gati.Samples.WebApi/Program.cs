using Gati.Samples.WebApi;

var builder = WebApplication.CreateBuilder(args);
builder.AddPredictionServices();

var app = builder.Build();
app.Use(app.Services.GetRequiredService<ShutdownDrain>().CloseConnectionsWhileDraining);
app.UseExceptionHandler();
app.UseStatusCodePages();
app.MapPredictionApi();
app.MapHealthChecks("/health", new Microsoft.AspNetCore.Diagnostics.HealthChecks.HealthCheckOptions { ResponseWriter = HealthResponse.WriteAsync });
app.MapPrometheusScrapingEndpoint("/metrics");
app.Run();

/// <summary>The sample's entry point (public for WebApplicationFactory).</summary>
public partial class Program;
