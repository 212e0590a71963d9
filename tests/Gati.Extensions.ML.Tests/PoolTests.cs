using System.Diagnostics.Metrics;
using Gati.MLNet;
using Gati.MLNet.Inference;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Gati.Extensions.ML.Tests;

[Collection(ServingPools.Name)]
public sealed class PoolTests(ServingModels models) : IClassFixture<ServingModels>
{
    public sealed class Input
    {
        public float[] Image { get; set; } = [];
    }

    private ServiceProvider Provider(Action<EarlyExitPredictionEnginePoolBuilder<Input, EarlyExitPrediction>> register, Action<EarlyExitPoolOptions>? configure = null)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        register(services.AddEarlyExitPredictionEnginePool<Input, EarlyExitPrediction>(configure ?? (o => o.Device = "cpu")));
        return services.BuildServiceProvider();
    }

    private EarlyExitPrediction[] Expected(string path)
    {
        var context = new Microsoft.ML.MLContext();
        var model = context.Gati().LoadModel(path, out _);
        using var engine = context.Gati().CreateEarlyExitEngine<Input, EarlyExitPrediction>(model);
        return engine.Predict(models.Images.Select(i => new Input { Image = i }).ToArray());
    }

    /// <summary>Batch sizes change libtorch's kernels: the same input scores within 1e-5, not bit for bit.</summary>
    private static bool Close(float[] a, float[] b) => a.Length == b.Length && a.Zip(b).All(p => Math.Abs(p.First - p.Second) <= 1e-5f);

    [Fact]
    public async Task Pool_ManyConcurrentCallers_GetTheEngineAnswers()
    {
        using var provider = Provider(b => b.FromFile(models.First));
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var expected = Expected(models.First);
        var tasks = Enumerable.Range(0, 400).Select(i => Task.Run(async () =>
        {
            var index = i % models.Images.Count;
            var input = new Input { Image = models.Images[index] };
            var result = i % 2 == 0 ? await pool.PredictAsync(input) : pool.Predict(input);
            return (index, result);
        })).ToArray();
        foreach (var (index, result) in await Task.WhenAll(tasks))
        {
            Assert.Equal(expected[index].PredictedLabel, result.PredictedLabel);
            Assert.Equal(expected[index].ExitLayer, result.ExitLayer);
        }
    }

    [Fact]
    public void Pool_NamedModels_AreServedSeparately()
    {
        using var provider = Provider(b => b.FromFile("first", models.First, false).FromFile("second", models.Second, false));
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        Assert.Equal(["first", "second"], pool.ModelNames.Order());
        var first = Expected(models.First);
        var second = Expected(models.Second);
        for (var i = 0; i < 16; i++)
        {
            Assert.True(Close(first[i].Score, pool.Predict("first", new Input { Image = models.Images[i] }).Score));
            Assert.True(Close(second[i].Score, pool.Predict("second", new Input { Image = models.Images[i] }).Score));
        }
        var error = Assert.Throws<ArgumentException>(() => pool.Predict("third", new Input { Image = models.Images[0] }));
        Assert.Contains("No model named 'third'", error.Message);
    }

    [Fact]
    public async Task HotReload_WhileRequestsRun_NoRequestFailsAndOldGenerationsAreDisposed()
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        using var provider = Provider(b => b.FromFile(path, watchForChanges: true), o =>
        {
            o.Device = "cpu";
            o.ReloadDebounceMs = 100;
        });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var firstAnswers = Expected(models.First);
        var secondAnswers = Expected(models.Second);
        Assert.Equal(1, pool.GetStatus().Generation);

        using var stop = new CancellationTokenSource();
        var failures = 0;
        var served = 0;
        var clients = Enumerable.Range(0, 6).Select(c => Task.Run(async () =>
        {
            for (var i = c; !stop.IsCancellationRequested; i++)
            {
                var index = i % models.Images.Count;
                try
                {
                    var result = await pool.PredictAsync(new Input { Image = models.Images[index] });
                    // Every answer comes from one model or the other, never from a torn mix.
                    if (!Close(result.Score, firstAnswers[index].Score) && !Close(result.Score, secondAnswers[index].Score))
                        Interlocked.Increment(ref failures);
                    Interlocked.Increment(ref served);
                }
                catch (Exception)
                {
                    Interlocked.Increment(ref failures);
                }
            }
        })).ToArray();

        await Task.Delay(300);
        // Replace the model the way a deployment does: write next to it, then rename over it (twice, to exercise coalescing).
        for (var swap = 0; swap < 2; swap++)
        {
            var source = swap == 0 ? models.Second : models.First;
            var staging = temp.File($"staging-{swap}.zip");
            File.Copy(source, staging);
            File.Move(staging, path, overwrite: true);
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (pool.GetStatus().Generation < swap + 2 && DateTime.UtcNow < deadline) await Task.Delay(50);
        }
        await Task.Delay(200);
        await stop.CancelAsync();
        await Task.WhenAll(clients);

        Assert.Equal(0, failures);
        Assert.True(served > 50, $"only {served} requests were served");
        Assert.Equal(3, pool.GetStatus().Generation);
        Assert.Equal(0, pool.RetiredGenerationsAlive());
        var final = pool.Predict(new Input { Image = models.Images[5] });
        Assert.True(Close(firstAnswers[5].Score, final.Score));
    }

    [Fact]
    public void HotReload_CorruptFile_KeepsServingTheOldModelAndReportsTheFailure()
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        using var provider = Provider(b => b.FromFile(path), o =>
        {
            o.Device = "cpu";
            o.ReloadAttempts = 2;
        });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        File.WriteAllText(path, "not a model");
        pool.Reload();
        var status = pool.GetStatus();
        Assert.Equal(1, status.Generation);
        Assert.Equal(1, status.FailedReloads);
        Assert.Contains("not a readable ML.NET model zip", status.LastError);
        Assert.NotNull(pool.Predict(new Input { Image = models.Images[0] }));
    }

    [Fact]
    public void Options_BoundFromConfiguration_ApplyAndPrecisionTargetRethresholds()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Gati:Pool:Device"] = "cpu",
            ["Gati:Pool:Batching"] = "false",
            ["Gati:Pool:ExitPrecisionTarget"] = "1.0",
        }).Build();
        var services = new ServiceCollection();
        services.AddEarlyExitPredictionEnginePool<Input, EarlyExitPrediction>().FromFile(models.First).Configure(configuration.GetSection("Gati:Pool"));
        using var provider = services.BuildServiceProvider();
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        Assert.Equal("cpu", pool.GetStatus().Device);
        // Re-thresholded for 100% precision: no cache fires where it could be wrong on its calibration rows.
        var answers = models.Images.Select(i => pool.Predict(new Input { Image = i })).ToArray();
        Assert.True(answers.Count(a => a.ExitLayer > 0) <= Expected(models.First).Count(a => a.ExitLayer > 0));
    }

    [Fact]
    public void Build_NoModelRegistered_SaysWhatToDo()
    {
        var services = new ServiceCollection();
        services.AddEarlyExitPredictionEnginePool<Input, EarlyExitPrediction>(o => o.Device = "cpu");
        using var provider = services.BuildServiceProvider();
        var error = Assert.Throws<InvalidOperationException>(() => provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>());
        Assert.Contains("FromFile", error.Message);
    }

    [Fact]
    public async Task Metrics_CountPredictionsByExitAndReloads()
    {
        var counts = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == ServingMetrics.MeterName) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            lock (counts) counts[instrument.Name] = counts.GetValueOrDefault(instrument.Name) + value;
        });
        listener.Start();
        using var provider = Provider(b => b.FromFile(models.First));
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        foreach (var image in models.Images.Take(20)) await pool.PredictAsync(new Input { Image = image });
        pool.Reload();
        Assert.Equal(20, counts["gati.predictions"]);
        Assert.Equal(1, counts["gati.model.reloads"]);
    }

    [Fact]
    public async Task PredictAsync_OneBadInputInABatch_FailsOnlyThatRequest()
    {
        using var provider = Provider(b => b.FromFile(models.First), o =>
        {
            o.Device = "cpu";
            o.MaxBatchDelayMs = 20;
        });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var good = Enumerable.Range(0, 8).Select(i => pool.PredictAsync(new Input { Image = models.Images[i] })).ToArray();
        var bad = pool.PredictAsync(new Input { Image = new float[10] });
        await Task.WhenAll(good);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => bad);
        Assert.Contains("has 10 values", error.Message);
    }
}
