using System.Diagnostics.Metrics;
using Gati.Extensions.ML.Tests.Infrastructure;
using Gati.MLNet;
using Gati.MLNet.Inference;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Gati.Extensions.ML.Tests;

/// <summary>Models that cannot be loaded, at start-up and on reload, and what the pool tells about them.</summary>
[Collection(ServingPools.Name)]
public sealed class PoolFaultTests(ServingModels models) : IClassFixture<ServingModels>
{
    public sealed class Input
    {
        public float[] Image { get; set; } = [];
    }

    private static readonly TimeSpan Guard = TimeSpan.FromMinutes(2);

    private static ServiceProvider Provider(string path, Action<EarlyExitPoolOptions> configure, bool watch = false, ILoggerProvider? logs = null,
        IMeterFactory? meters = null)
    {
        var services = new ServiceCollection();
        services.AddLogging(l =>
        {
            if (logs is not null) l.AddProvider(logs);
        });
        if (meters is not null) services.AddSingleton(meters);
        services.AddEarlyExitPredictionEnginePool<Input, EarlyExitPrediction>(o =>
        {
            o.Device = "cpu";
            configure(o);
        }).FromFile(path, watch);
        return services.BuildServiceProvider();
    }

    private static EarlyExitPredictionEnginePool<Input, EarlyExitPrediction> Pool(ServiceProvider provider) =>
        provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();

    /// <summary>
    /// Replaces a served model file the way docs/serving.md asks: written beside it, then renamed over it. A retry or a
    /// watcher may be reading the file at that moment, and on Linux .NET's File.Copy onto a file that another .NET stream
    /// has open fails with a sharing violation (both take advisory locks); a rename never waits for readers.
    /// </summary>
    private static void Deploy(string source, string path)
    {
        var incoming = path + ".incoming";
        File.Copy(source, incoming, overwrite: true);
        File.Move(incoming, path, overwrite: true);
    }

    private static async Task Until(Func<bool> condition, string what)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > Guard) Assert.Fail($"Timed out waiting until {what}.");
            await Task.Delay(20);
        }
    }

    [Fact]
    public void Startup_ModelThatCannotBeLoaded_FailsThePoolNamingTheFileAndTheReason()
    {
        using var temp = new TempDirectory();
        var missing = temp.File("missing.zip");
        using (var provider = Provider(missing, _ => { }))
        {
            var error = Assert.Throws<InvalidOperationException>(() => Pool(provider));
            Assert.Contains($"Model 'default' could not be loaded from {missing}", error.Message);
        }
        var garbage = temp.File("garbage.zip");
        File.WriteAllText(garbage, "not a model");
        using (var provider = Provider(garbage, o => o.ReloadAttempts = 1))
        {
            var error = Assert.Throws<InvalidOperationException>(() => Pool(provider));
            Assert.Contains("could not be loaded", error.Message);
            Assert.Contains("not a readable ML.NET model zip", error.Message);
        }
        var corrupt = temp.File("corrupt.zip");
        ModelTampering.CorruptOnnxGraph(models.First, corrupt);
        using (var provider = Provider(corrupt, _ => { }))
        {
            var error = Assert.Throws<InvalidOperationException>(() => Pool(provider));
            Assert.Contains("could not be loaded", error.Message);
            Assert.Contains("No Op registered for LogSoftmxx", error.Message);
        }
    }

    [Fact]
    public async Task Startup_KeepRetrying_IsUnavailableWithTheReasonAndServesOnceTheFileLoads()
    {
        using var temp = new TempDirectory();
        var path = temp.File("late.zip");
        using var provider = Provider(path, o =>
        {
            o.StartupLoadFailure = StartupLoadFailure.KeepRetrying;
            o.ReloadAttempts = 1;
            o.RetryDelayMs = 100;
            o.MaxRetryDelayMs = 400;
        });
        var pool = Pool(provider);
        var health = pool.GetHealth();
        Assert.Equal(ModelState.Unavailable, health.State);
        Assert.Equal("default", health.Name);
        Assert.Equal(0, health.Generation);
        Assert.Contains("Model 'default' is not loaded", health.Reason);
        Assert.Contains("next attempt at", health.Reason);
        Assert.NotNull(health.NextRetryAt);
        var unavailable = Assert.Throws<ModelUnavailableException>(() => pool.Predict(new Input { Image = models.Images[0] }));
        Assert.Contains(Path.GetFileName(path), unavailable.Message);
        Assert.Throws<ModelUnavailableException>(() => pool.GetStatus());

        // Calls do not load: only the back-off does (100, 200, 400, 400 ... ms), so 200 calls cost no more attempts.
        var before = pool.GetHealth().FailedLoads;
        for (var i = 0; i < 200; i++) Assert.Throws<ModelUnavailableException>(() => pool.Predict(new Input { Image = models.Images[0] }));
        var after = pool.GetHealth().FailedLoads;
        Assert.True(after - before <= 3, $"{after - before} load attempts during 200 calls");
        await Until(() => pool.GetHealth().FailedLoads >= 4, "the back-off retried several times");

        File.Copy(models.First, path);
        await Until(() => pool.GetHealth().State == ModelState.Serving, "the model loads on a retry");
        health = pool.GetHealth();
        Assert.Equal(1, health.Generation);
        Assert.Null(health.LastError);
        Assert.Null(health.NextRetryAt);
        Assert.NotNull(pool.Predict(new Input { Image = models.Images[0] }));
        var failed = health.FailedLoads;
        await Task.Delay(1000);
        Assert.Equal(failed, pool.GetHealth().FailedLoads);
    }

    [Fact]
    public async Task Reload_CorruptOnnxGraph_IsCaughtBeforeTheSwapCountedDegradedAndRetried()
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        var logs = new RecordingLoggerProvider();
        using var provider = Provider(path, o =>
        {
            o.RetryDelayMs = 200;
            o.MaxRetryDelayMs = 400;
        }, logs: logs);
        var pool = Pool(provider);
        var expected = pool.Predict(new Input { Image = models.Images[3] });

        ModelTampering.CorruptOnnxGraph(models.First, path);
        pool.Reload();
        var health = pool.GetHealth();
        Assert.Equal(ModelState.Degraded, health.State);
        Assert.Equal(1, health.Generation);
        Assert.Equal(1, health.FailedLoads);
        Assert.Contains("OnnxRuntimeException", health.LastError);
        Assert.Contains("No Op registered for LogSoftmxx", health.LastError);
        Assert.Contains("the last load of the file failed", health.Reason);
        Assert.Contains("generation 1 keeps serving", health.Reason);
        Assert.Equal(health.LastError, pool.GetStatus().LastError);
        Assert.Equal(expected.PredictedLabel, pool.Predict(new Input { Image = models.Images[3] }).PredictedLabel);
        Assert.Contains(logs.Lines, l => l.Level == LogLevel.Error && l.Text.Contains("Reloading model 'default'") && l.Text.Contains("next attempt in"));
        Assert.DoesNotContain(logs.Lines, l => l.Text.Contains("Unexpected error"));

        // Retried with back-off, still failing: counted each time; then the file is fixed and the next retry serves it.
        await Until(() => pool.GetHealth().FailedLoads >= 3, "the reload was retried");
        Deploy(models.Second, path);
        await Until(() => pool.GetHealth().State == ModelState.Serving, "a retry loads the fixed file");
        Assert.Equal(2, pool.GetHealth().Generation);
    }

    [Fact]
    public async Task Reload_ModelWithoutCachesAndDeletedFile_AreLoggedAndVisible()
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        var logs = new RecordingLoggerProvider();
        using var provider = Provider(path, o => o.ReloadDebounceMs = 50, watch: true, logs: logs);
        var pool = Pool(provider);
        Assert.Empty(pool.GetHealth().Warnings);

        // The base model alone: serves, with a warning in the status, the health and the log.
        var context = new Microsoft.ML.MLContext(0);
        var loaded = context.Gati().LoadModel(models.First, out var schema);
        var baseOnly = temp.File("base.zip");
        var chain = (Microsoft.ML.Data.TransformerChain<Microsoft.ML.ITransformer>)loaded;
        context.Gati().SaveModel(new Microsoft.ML.Data.TransformerChain<Microsoft.ML.ITransformer>(chain.Where(t => t is not Gati.MLNet.Transforms.LearnedCachesTransformer).ToArray()), schema, baseOnly);
        foreach (var component in chain) (component as IDisposable)?.Dispose();
        Deploy(baseOnly, path);
        await Until(() => pool.GetHealth().Generation == 2, "the watched file is reloaded");
        var health = pool.GetHealth();
        Assert.Equal(ModelState.Serving, health.State);
        Assert.Contains("the model has no learned caches: every request runs the full base model", health.Warnings);
        Assert.Equal(health.Warnings, pool.GetStatus().Warnings);
        Assert.Empty(pool.GetStatus().CacheLayers);
        Assert.Contains(logs.Lines, l => l.Level == LogLevel.Warning && l.Text.Contains("has no learned caches"));

        File.Delete(path);
        await Until(() => pool.GetHealth().State == ModelState.Degraded, "the deletion is noticed");
        health = pool.GetHealth();
        Assert.Contains("the model file was deleted", health.Reason);
        Assert.Contains(health.Warnings, w => w.Contains("was deleted"));
        // The watcher marks the file missing (what the health reads) before it runs the callback that logs it.
        await Until(() => logs.Lines.Any(l => l.Level == LogLevel.Warning && l.Text.Contains("was deleted")), "the deletion is logged");
        Assert.NotNull(pool.Predict(new Input { Image = models.Images[0] }));

        File.Copy(models.First, path);
        await Until(() => pool.GetHealth().State == ModelState.Serving && pool.GetHealth().Generation == 3, "the restored file is reloaded");
        Assert.Empty(pool.GetHealth().Warnings);
    }

    [Fact]
    public void Metrics_LatencyPerExitLayer_AndTheDefaultModelNamed()
    {
        using var meters = new ScopedMeterFactory();
        using var provider = Provider(models.First, _ => { }, meters: meters);
        using var listener = new MeterListener();
        var latency = new List<(double Ms, string? Model, string? Exit)>();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == ServingMetrics.MeterName && ReferenceEquals(instrument.Meter.Scope, meters)) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) =>
        {
            if (instrument.Name != "gati.prediction.latency") return;
            string? model = null, exit = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "model") model = tag.Value as string;
                if (tag.Key == "exit") exit = tag.Value as string;
            }
            lock (latency) latency.Add((value, model, exit));
        });
        listener.Start();
        var pool = Pool(provider);
        var answers = models.Images.Take(40).Select(i => pool.Predict(new Input { Image = i })).ToArray();
        lock (latency)
        {
            Assert.Equal(40, latency.Count);
            Assert.All(latency, l => Assert.Equal("default", l.Model));
            Assert.All(latency, l => Assert.True(l.Ms > 0));
            // One measurement per answer, tagged with the exit it took.
            var exits = answers.Select(a => a.ExitLayer == 0 ? "full" : a.ExitLayer.ToString(System.Globalization.CultureInfo.InvariantCulture)).Order();
            Assert.Equal(exits, latency.Select(l => l.Exit).Order());
            Assert.True(latency.Select(l => l.Exit).Distinct().Count() >= 2, "the test images should take more than one exit");
        }
    }

    /// <summary>Keeps every log line (level and formatted text).</summary>
    internal sealed class RecordingLoggerProvider : ILoggerProvider
    {
        private readonly List<(LogLevel Level, string Text)> _lines = [];

        public IReadOnlyList<(LogLevel Level, string Text)> Lines
        {
            get
            {
                lock (_lines) return _lines.ToArray();
            }
        }

        public ILogger CreateLogger(string categoryName) => new Logger(this);

        public void Dispose()
        {
        }

        private sealed class Logger(RecordingLoggerProvider owner) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                lock (owner._lines) owner._lines.Add((logLevel, formatter(state, exception)));
            }
        }
    }
}
