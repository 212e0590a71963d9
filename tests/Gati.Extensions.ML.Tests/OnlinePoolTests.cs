using System.Diagnostics.Metrics;
using Gati.MLNet;
using Gati.MLNet.Inference;
using Gati.MLNet.Online;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Gati.Extensions.ML.Tests;

/// <summary>The pool with continuously updated caches (docs/online.md): generations from updates, status, metrics, saving.</summary>
[Collection(ServingPools.Name)]
public sealed class OnlinePoolTests(ServingModels models) : IClassFixture<ServingModels>
{
    private static readonly TimeSpan HangGuard = TimeSpan.FromSeconds(60);

    private ServiceProvider Provider(string path, OnlineCacheOptions online, bool watch = false)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddEarlyExitPredictionEnginePool<PoolTests.Input, EarlyExitPrediction>(o =>
        {
            o.Device = "cpu";
            o.Online = online;
        }).FromFile(path, watch);
        return services.BuildServiceProvider();
    }

    private EarlyExitPrediction[] Expected(string path)
    {
        var context = new Microsoft.ML.MLContext();
        var model = context.Gati().LoadModel(path, out _);
        using var engine = context.Gati().CreateEarlyExitEngine<PoolTests.Input, EarlyExitPrediction>(model);
        return engine.Predict(models.Images.Select(i => new PoolTests.Input { Image = i }).ToArray());
    }

    private static bool Close(float[] a, float[] b) => a.Length == b.Length && a.Zip(b).All(p => Math.Abs(p.First - p.Second) <= 1e-5f);

    [Fact]
    public async Task UpdatesSwappedIn_WhileRequestsRun_NoRequestFailsAndRetiredGenerationsAreDisposed()
    {
        // Updates off: the test swaps candidates in itself (the same caches, re-created), so every swap is a real new
        // generation with a new engine while six clients keep calling.
        using var provider = Provider(models.First, new OnlineCacheOptions { Updates = false, SampleFraction = 0.5, AgreementTarget = 0.5, Seed = 2 });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<PoolTests.Input, EarlyExitPrediction>>();
        var online = pool.GetOnlineCaches() ?? throw new InvalidOperationException("online caches were not started");
        var expected = Expected(models.First);

        using var stop = new CancellationTokenSource();
        var failures = new List<string>();
        var served = 0;
        var clients = Enumerable.Range(0, 6).Select(c => Task.Run(async () =>
        {
            for (var i = c; !stop.IsCancellationRequested; i++)
            {
                var index = i % models.Images.Count;
                try
                {
                    var input = new PoolTests.Input { Image = models.Images[index] };
                    var result = c % 2 == 0 ? await pool.PredictAsync(input) : pool.Predict(input);
                    if (!Close(result.Score, expected[index].Score)) lock (failures) failures.Add($"image {index}: different scores");
                    Interlocked.Increment(ref served);
                }
                catch (Exception ex)
                {
                    lock (failures) failures.Add(ex.ToString());
                }
            }
        })).ToArray();

        const int swaps = 5;
        for (var swap = 0; swap < swaps; swap++)
        {
            var before = Volatile.Read(ref served);
            var deadline = DateTime.UtcNow + HangGuard;
            while (Volatile.Read(ref served) < before + 40 && DateTime.UtcNow < deadline) await Task.Delay(5);
            online.Install(online.Model.WithCaches(online.Model.Caches));
        }
        var settle = Volatile.Read(ref served);
        while (Volatile.Read(ref served) < settle + 40) await Task.Delay(5);
        await stop.CancelAsync();
        await Task.WhenAll(clients);

        Assert.Empty(failures);
        var status = pool.GetStatus();
        Assert.Equal(1 + swaps, status.Generation);
        Assert.Equal($"online update {swaps}", status.Source);
        Assert.Same(online, pool.GetOnlineCaches());
        Assert.Equal(0, pool.RetiredGenerationsAlive());
        // The shadow worker labels sampled requests in the background: give it until the hang guard to catch up.
        var shadowDeadline = DateTime.UtcNow + HangGuard;
        while (pool.GetStatus().Online!.Labelled == 0 && DateTime.UtcNow < shadowDeadline) await Task.Delay(10);
        Assert.True(pool.GetStatus().Online!.Labelled > 0, "nothing was shadowed");
    }

    [Fact]
    public async Task Status_Metrics_AndSave_ReportTheLiveFigures()
    {
        var gauges = new Dictionary<string, double>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == ServingMetrics.MeterName) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) =>
        {
            var layer = tags.ToArray().FirstOrDefault(t => t.Key == "layer").Value;
            lock (gauges) gauges[$"{instrument.Name}/{layer}"] = value;
        });
        listener.Start();

        using var temp = new TempDirectory();
        using var provider = Provider(models.First, new OnlineCacheOptions { Updates = false, SampleFraction = 1, AgreementTarget = 0.5, Seed = 3 });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<PoolTests.Input, EarlyExitPrediction>>();
        foreach (var image in models.Images) await pool.PredictAsync(new PoolTests.Input { Image = image });
        var online = pool.GetOnlineCaches()!;
        var deadline = DateTime.UtcNow + HangGuard;
        while (online.Sampler.Agreement.Requests < models.Images.Count && DateTime.UtcNow < deadline) await Task.Delay(20);

        var status = pool.GetStatus().Online!;
        Assert.Equal(models.Images.Count, status.Agreement.Requests); // every request sampled, its exit checked
        Assert.InRange(status.Agreement.Lower, 0, status.Agreement.Estimate);
        Assert.InRange(status.Agreement.Upper, status.Agreement.Estimate, 1);
        Assert.Equal(pool.GetStatus().CacheLayers.Count, status.Thresholds.Count);
        Assert.InRange(status.WindowBytes, 1, (long)(online.Options.WindowMegabytes * 1024 * 1024));
        // The status counts the sampler's changes of traffic (one stream of the same images: none, or those it saw).
        Assert.Equal(online.Sampler.TrafficChanges.Count, status.TrafficChanges);
        Assert.Equal(online.Sampler.TrafficChanges.LastOrDefault(), status.LastTrafficChange);

        listener.RecordObservableInstruments();
        Assert.Equal(status.Agreement.Estimate, gauges["gati.agreement.live/all"], 6);
        Assert.Equal(status.Agreement.Lower, gauges["gati.agreement.live.lower/all"], 6);
        Assert.True(gauges.ContainsKey($"gati.cache.threshold/{pool.GetStatus().CacheLayers[0]}"));

        // What a replica publishes: the model served now, loadable on its own and answering the same.
        var saved = temp.File("published.zip");
        pool.SaveModel(EarlyExitPredictionEnginePool<PoolTests.Input, EarlyExitPrediction>.DefaultModelName, saved);
        var republished = Expected(saved);
        for (var i = 0; i < models.Images.Count; i++)
        {
            var served = pool.Predict(new PoolTests.Input { Image = models.Images[i] });
            Assert.Equal(served.PredictedLabel, republished[i].PredictedLabel);
            Assert.Equal(served.ExitLayer, republished[i].ExitLayer);
        }
    }

    [Fact]
    public async Task Reload_StartsFreshOnlineCaches_AndDisposeStopsThem()
    {
        using var provider = Provider(models.First, new OnlineCacheOptions { UpdateEveryRows = 10, ValidationRows = 10, SampleFraction = 1, Seed = 4 });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<PoolTests.Input, EarlyExitPrediction>>();
        var first = pool.GetOnlineCaches();
        Assert.NotNull(first);
        foreach (var image in models.Images) pool.Predict(new PoolTests.Input { Image = image });
        pool.Reload();
        var second = pool.GetOnlineCaches();
        Assert.NotNull(second);
        Assert.NotSame(first, second);
        Assert.Equal(2, pool.GetStatus().Generation);
        Assert.Equal("file", pool.GetStatus().Source);
        foreach (var image in models.Images) pool.Predict(new PoolTests.Input { Image = image });
        // Disposing with the updater possibly mid-attempt returns (the attempt is abandoned), and the pool refuses calls.
        await Task.Run(provider.Dispose).WaitAsync(HangGuard);
        Assert.Throws<ObjectDisposedException>(() => pool.Predict(new PoolTests.Input { Image = models.Images[0] }));
    }

    [Fact]
    public void Options_InvalidOnlineSettings_AreRejectedWhenThePoolIsBuilt()
    {
        using var provider = Provider(models.First, new OnlineCacheOptions { SampleFraction = 1.5 });
        var error = Assert.ThrowsAny<ArgumentException>(() => provider.GetRequiredService<EarlyExitPredictionEnginePool<PoolTests.Input, EarlyExitPrediction>>());
        Assert.Contains("SampleFraction", error.Message);
    }
}

/// <summary>
/// Pool tests run one class at a time: the pools' meters share one name, and a test that counts measurements would
/// count another class's pool too.
/// </summary>
[CollectionDefinition(Name)]
public sealed class ServingPools
{
    public const string Name = "Serving pools";
}
