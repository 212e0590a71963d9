using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Gati.Extensions.ML;
using Gati.MLNet.Inference;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Gati.Samples.WebApi.Tests;

/// <summary>The sample with a model that will not load, at start-up and on hot reload, through its real endpoints.</summary>
public sealed class ServingFaultTests(ServingModels models) : IClassFixture<ServingModels>
{
    private static readonly TimeSpan Guard = TimeSpan.FromMinutes(2);

    private static WebApplicationFactory<Program> Factory(string modelPath, bool watch = false, Action<IWebHostBuilder>? more = null) =>
        new WebApplicationFactory<Program>().WithWebHostBuilder(host =>
        {
            host.UseSetting("Gati:ModelPath", modelPath);
            host.UseSetting("Gati:WatchForChanges", watch ? "true" : "false");
            host.UseSetting("Gati:Pool:Device", "cpu");
            host.UseSetting("Gati:Pool:ReloadDebounceMs", "50");
            host.UseSetting("Gati:DrainSeconds", "0");
            more?.Invoke(host);
        });

    private static ByteArrayContent Png(byte[] bytes)
    {
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = MediaTypeHeaderValue.Parse("image/png");
        return content;
    }

    private static async Task<(HttpStatusCode Status, JsonElement Body)> Get(HttpClient client, string path)
    {
        using var response = await client.GetAsync(path);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return (response.StatusCode, json.RootElement.Clone());
    }

    private static async Task Until(Func<Task<bool>> condition, string what)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > Guard) Assert.Fail($"Timed out waiting until {what}.");
            await Task.Delay(50);
        }
    }

    [Fact]
    public void Startup_ModelThatCannotBeLoaded_StopsTheServerWithTheReason()
    {
        using var temp = new TempDirectory();
        var garbage = temp.File("garbage.zip");
        File.WriteAllText(garbage, "not a model");
        var corrupt = temp.File("corrupt.zip");
        ModelTampering.CorruptOnnxGraph(models.First, corrupt);
        foreach (var (path, detail) in new[] { (temp.File("missing.zip"), "Model file not found"), (garbage, "not a readable ML.NET model zip"), (corrupt, "No Op registered for LogSoftmxx") })
        {
            using var factory = Factory(path, more: h => h.UseSetting("Gati:Pool:ReloadAttempts", "1"));
            var error = Assert.ThrowsAny<Exception>(() => factory.CreateClient());
            var message = error is AggregateException aggregate ? string.Join(" | ", aggregate.Flatten().InnerExceptions.Select(e => e.Message)) : error.Message;
            Assert.Contains($"Model 'default' could not be loaded from {path}", message);
            Assert.Contains(detail, message);
        }
    }

    [Fact]
    public async Task Startup_KeepRetrying_Answers503WithTheReasonUntilTheModelLoads()
    {
        using var temp = new TempDirectory();
        var path = temp.File("late.zip");
        using var factory = Factory(path, more: h =>
        {
            h.UseSetting("Gati:Pool:StartupLoadFailure", "KeepRetrying");
            h.UseSetting("Gati:Pool:ReloadAttempts", "1");
            h.UseSetting("Gati:Pool:RetryDelayMs", "200");
            h.UseSetting("Gati:Pool:MaxRetryDelayMs", "400");
        });
        using var client = factory.CreateClient();

        var (status, health) = await Get(client, "/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.Equal("Unhealthy", health.GetProperty("status").GetString());
        Assert.Contains("Model 'default' is not loaded", health.GetProperty("reason").GetString());
        Assert.Equal(0, health.GetProperty("generation").GetInt32());

        using (var response = await client.PostAsync("/predict", Png(LoadTest.LoadTest.Png(models.RawImages[0], 28, 28))))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.NotNull(response.Headers.RetryAfter);
            using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Contains("Model 'default' is not loaded", problem.RootElement.GetProperty("detail").GetString());
            Assert.Contains("Model file not found", problem.RootElement.GetProperty("detail").GetString());
        }
        var (modelStatus, model) = await Get(client, "/model");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, modelStatus);
        Assert.Contains("is not loaded", model.GetProperty("detail").GetString());

        // Requests do not retry the load: 50 of them cost at most the back-off's own attempts.
        var pool = factory.Services.GetRequiredService<EarlyExitPredictionEnginePool<ImageInput, EarlyExitPrediction>>();
        var before = pool.GetHealth().FailedLoads;
        for (var i = 0; i < 50; i++)
        {
            using var response = await client.PostAsync("/predict", Png(LoadTest.LoadTest.Png(models.RawImages[0], 28, 28)));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        }
        Assert.True(pool.GetHealth().FailedLoads - before <= 5, $"{pool.GetHealth().FailedLoads - before} load attempts during 50 requests");

        File.Copy(models.First, path);
        await Until(async () => (await Get(client, "/health")).Status == HttpStatusCode.OK, "the model loads on a retry");
        (_, health) = await Get(client, "/health");
        Assert.Equal("Healthy", health.GetProperty("status").GetString());
        Assert.Equal(1, health.GetProperty("generation").GetInt32());
        using (var response = await client.PostAsync("/predict", Png(LoadTest.LoadTest.Png(models.RawImages[0], 28, 28))))
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task HotReload_CorruptOnnxGraph_IsDegradedWithTheErrorAndTheOldModelServes()
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        using var factory = Factory(path, watch: true, more: h =>
        {
            h.UseSetting("Gati:Pool:RetryDelayMs", "300");
            h.UseSetting("Gati:Pool:MaxRetryDelayMs", "600");
        });
        using var client = factory.CreateClient();
        var png = LoadTest.LoadTest.Png(models.RawImages[2], 28, 28);
        string before;
        using (var response = await client.PostAsync("/predict", Png(png))) before = await response.Content.ReadAsStringAsync();

        var staging = temp.File("staging.zip");
        ModelTampering.CorruptOnnxGraph(models.First, staging);
        File.Move(staging, path, overwrite: true);
        await Until(async () => (await Get(client, "/health")).Body.GetProperty("status").GetString() == "Degraded", "the failed reload shows");
        var (status, health) = await Get(client, "/health");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Contains("the last load of the file failed", health.GetProperty("reason").GetString());
        Assert.Contains("generation 1 keeps serving", health.GetProperty("reason").GetString());
        var (_, model) = await Get(client, "/model");
        Assert.Equal("Degraded", model.GetProperty("state").GetString());
        Assert.Equal(1, model.GetProperty("generation").GetInt32());
        Assert.True(model.GetProperty("failedReloads").GetInt32() >= 1);
        Assert.Contains("No Op registered for LogSoftmxx", model.GetProperty("lastError").GetString());
        using (var response = await client.PostAsync("/predict", Png(png)))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(JsonDocument.Parse(before).RootElement.GetProperty("label").GetString(),
                JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("label").GetString());
        }
        // Retried with back-off while it stays broken.
        var failed = model.GetProperty("failedReloads").GetInt32();
        await Until(async () => (await Get(client, "/model")).Body.GetProperty("failedReloads").GetInt32() > failed, "the reload is retried");

        File.Copy(models.Second, staging, overwrite: true);
        File.Move(staging, path, overwrite: true);
        await Until(async () => (await Get(client, "/health")).Body.GetProperty("status").GetString() == "Healthy", "the fixed file serves");
        (_, model) = await Get(client, "/model");
        Assert.Equal(2, model.GetProperty("generation").GetInt32());
    }

    [Fact]
    public async Task Metrics_LatencyPerExitLayer_NamesTheModel()
    {
        using var factory = Factory(models.First);
        using var client = factory.CreateClient();
        for (var i = 0; i < 20; i++)
        {
            using var response = await client.PostAsync("/predict", Png(LoadTest.LoadTest.Png(models.RawImages[i], 28, 28)));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        var metrics = await client.GetStringAsync("/metrics");
        Assert.Contains("gati_prediction_latency_milliseconds_bucket{", metrics);
        var lines = metrics.Split('\n').Where(l => l.StartsWith("gati_prediction_latency_milliseconds_count{", StringComparison.Ordinal)).ToArray();
        Assert.True(lines.Length >= 2, "one latency series per exit taken:\n" + string.Join("\n", lines));
        Assert.All(lines, l => Assert.Contains("model=\"default\"", l));
        Assert.Contains(lines, l => l.Contains("exit=\"full\""));
        Assert.DoesNotContain("model=\"\"", metrics);
    }
}
