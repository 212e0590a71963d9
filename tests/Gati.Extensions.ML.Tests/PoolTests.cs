using System.Diagnostics.Metrics;
using Gati.Extensions.ML.Tests.Infrastructure;
using Gati.MLNet;
using Gati.MLNet.Inference;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Transforms;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.Extensions.ML.Tests;

[Collection(ServingPools.Name)]
public sealed class PoolTests(ServingModels models) : IClassFixture<ServingModels>
{
    public sealed class Input
    {
        public float[] Image { get; set; } = [];
    }

    /// <summary>Long enough never to decide a test: only a bound on how long a broken build would hang.</summary>
    private static readonly TimeSpan HangGuard = TimeSpan.FromMinutes(2);

    private ServiceProvider Provider(Action<EarlyExitPredictionEnginePoolBuilder<Input, EarlyExitPrediction>> register, Action<EarlyExitPoolOptions>? configure = null,
        TimeProvider? clock = null, ILoggerProvider? logger = null)
    {
        var services = new ServiceCollection();
        services.AddLogging(l =>
        {
            if (logger is not null) l.AddProvider(logger);
        });
        if (clock is not null) services.AddSingleton(clock);
        // The pool's meter is made by this provider's own factory, so measurements can be told apart from other pools'.
        services.AddSingleton<IMeterFactory, ScopedMeterFactory>();
        register(services.AddEarlyExitPredictionEnginePool<Input, EarlyExitPrediction>(configure ?? (o => o.Device = "cpu")));
        return services.BuildServiceProvider();
    }

    /// <summary>
    /// Records the measurements of the pool a provider creates (System.Diagnostics.Metrics) while alive; create it before
    /// the pool is resolved.
    /// </summary>
    private sealed class ServingMeasurements : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly List<(string Instrument, double Value, Dictionary<string, object?> Tags)> _values = [];

        public ServingMeasurements(IServiceProvider provider)
        {
            var scope = provider.GetRequiredService<IMeterFactory>();
            _listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == ServingMetrics.MeterName && ReferenceEquals(instrument.Meter.Scope, scope)) l.EnableMeasurementEvents(instrument);
            };
            _listener.SetMeasurementEventCallback<long>((i, v, t, _) => Add(i.Name, v, t));
            _listener.SetMeasurementEventCallback<int>((i, v, t, _) => Add(i.Name, v, t));
            _listener.SetMeasurementEventCallback<double>((i, v, t, _) => Add(i.Name, v, t));
            _listener.Start();
        }

        private void Add(string instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var map = new Dictionary<string, object?>();
            foreach (var tag in tags) map[tag.Key] = tag.Value;
            lock (_values) _values.Add((instrument, value, map));
        }

        public double[] Values(string instrument)
        {
            lock (_values) return _values.Where(v => v.Instrument == instrument).Select(v => v.Value).ToArray();
        }

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>A logger whose errors throw, as Microsoft.Extensions.Logging does when one of its providers fails.</summary>
    private sealed class FailingLoggerProvider : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new FailingLogger();

        public void Dispose()
        {
        }

        private sealed class FailingLogger : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (logLevel >= LogLevel.Error) throw new InvalidOperationException("the log sink is down");
            }
        }
    }

    /// <summary>An input whose image getter can be made to fail: an engine error that is not about the input's values.</summary>
    public sealed class FlakyInput
    {
        private readonly float[] _image;

        public FlakyInput(float[] image, bool fail)
        {
            _image = image;
            Fail = fail;
        }

        public bool Fail { get; }

        public float[] Image => Fail ? throw new InvalidOperationException("cannot read this input") : _image;
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
        var generation = pool.GetStatus().Generation;

        using var stop = new CancellationTokenSource();
        var failures = 0;
        var served = 0;
        // Released after every 20 answers: the clients are really running before and after each swap.
        using var progress = new SemaphoreSlim(0);
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
                    if (Interlocked.Increment(ref served) % 20 == 0) progress.Release();
                }
                catch (Exception)
                {
                    Interlocked.Increment(ref failures);
                }
            }
        })).ToArray();

        async Task ClientsAnswerAnotherBatch()
        {
            for (var i = 0; i < 2; i++) Assert.True(await progress.WaitAsync(HangGuard), "hang guard: the clients stopped answering");
        }

        // Waits on the pool's reload token until the expected model answers (a change can raise more than one reload of the
        // same file: wait for reloads, never for a generation number or a time).
        async Task WaitUntilServing(EarlyExitPrediction[] answers)
        {
            while (true)
            {
                var reloaded = pool.GetReloadToken();
                if (Close(answers[7].Score, pool.Predict(new Input { Image = models.Images[7] }).Score)) return;
                var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                using (reloaded.RegisterChangeCallback(_ => signal.TrySetResult(), null))
                    await signal.Task.WaitAsync(HangGuard);
            }
        }

        await ClientsAnswerAnotherBatch();
        // Replace the model the way a deployment does: write next to it, then rename over it (twice, to exercise coalescing).
        for (var swap = 0; swap < 2; swap++)
        {
            var source = swap == 0 ? models.Second : models.First;
            var staging = temp.File($"staging-{swap}.zip");
            File.Copy(source, staging);
            File.Move(staging, path, overwrite: true);
            await WaitUntilServing(swap == 0 ? secondAnswers : firstAnswers);
            await ClientsAnswerAnotherBatch();
        }
        await stop.CancelAsync();
        await Task.WhenAll(clients);

        Assert.Equal(0, failures);
        var status = pool.GetStatus();
        Assert.True(status.Generation >= generation + 2, $"generation {status.Generation} after two swaps from {generation}");
        Assert.Equal(0, status.FailedReloads);
        // Every call has ended: no retired generation may still hold a model.
        Assert.Equal(0, pool.RetiredGenerationsAlive());
        Assert.True(Close(firstAnswers[5].Score, pool.Predict(new Input { Image = models.Images[5] }).Score));
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
    public void Options_BoundFromConfiguration_ApplyAndPrecisionTargetRethresholdsEveryCache()
    {
        const double target = 0.99;
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Gati:Pool:Device"] = "cpu",
            ["Gati:Pool:Batching"] = "false",
            ["Gati:Pool:ExitPrecisionTarget"] = target.ToString(System.Globalization.CultureInfo.InvariantCulture),
        }).Build();
        var services = new ServiceCollection();
        services.AddEarlyExitPredictionEnginePool<Input, EarlyExitPrediction>().FromFile(models.First).Configure(configuration.GetSection("Gati:Pool"));
        using var provider = services.BuildServiceProvider();
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        Assert.Equal("cpu", pool.GetStatus().Device);

        // The reference: the saved caches re-thresholded from their calibration curves by the library itself.
        var context = new MLContext();
        var model = ((IEnumerable<ITransformer>)context.Gati().LoadModel(models.First, out _)).ToArray();
        var caches = model.OfType<LearnedCachesTransformer>().Single();
        using var rethresholded = caches.WithPrecisionTarget(target);
        var thresholds = rethresholded.Caches.Select(c => c.Calibration.Threshold).ToArray();
        Assert.NotEqual(caches.Caches.Select(c => c.Calibration.Threshold), thresholds);
        var chain = new TransformerChain<ITransformer>([.. model.Where(t => t != caches), rethresholded]);
        using var reference = context.Gati().CreateEarlyExitEngine<Input, EarlyExitPrediction>(chain);
        var inputs = models.Images.Select(i => new Input { Image = i }).ToArray();
        var expected = reference.Predict(inputs);
        // The target must change where rows exit, or this test could not tell a re-thresholded model from the saved one.
        Assert.NotEqual(Expected(models.First).Select(a => a.ExitLayer), expected.Select(a => a.ExitLayer));

        var answers = inputs.Select(pool.Predict).ToArray();
        Assert.Equal(expected.Select(a => a.ExitLayer), answers.Select(a => a.ExitLayer));
        // 0.99 is stricter than the 0.95 the model was saved with: strictly fewer rows leave early ("<=" would also pass
        // for a pool that ignored the target).
        var savedEarly = Expected(models.First).Count(a => a.ExitLayer > 0);
        Assert.True(answers.Count(a => a.ExitLayer > 0) < savedEarly, $"{answers.Count(a => a.ExitLayer > 0)} early exits at {target}, {savedEarly} as saved");
        Assert.Equal(expected.Select(a => a.PredictedLabel), answers.Select(a => a.PredictedLabel));
        foreach (var component in model) (component as IDisposable)?.Dispose();
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
        using var provider = Provider(b => b.FromFile(models.First));
        using var measurements = new ServingMeasurements(provider);
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        foreach (var image in models.Images.Take(20)) await pool.PredictAsync(new Input { Image = image });
        pool.Reload();
        Assert.Equal(20, measurements.Values("gati.predictions").Sum());
        Assert.Equal(1, measurements.Values("gati.model.reloads").Sum());
    }

    [Fact]
    public async Task PredictAsync_OneBadInputInABatch_FailsOnlyThatRequest()
    {
        var clock = new ManualClock();
        using var provider = Provider(b => b.FromFile(models.First), o =>
        {
            o.Device = "cpu";
            o.Batching = true;
            o.MaxBatchDelayMs = 1000;
        }, clock);
        using var measurements = new ServingMeasurements(provider);
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var good = Enumerable.Range(0, 8).Select(i => pool.PredictAsync(new Input { Image = models.Images[i] })).ToArray();
        var bad = pool.PredictAsync(new Input { Image = new float[10] });
        await clock.WhenArmedAsync().WaitAsync(HangGuard);
        clock.Advance(TimeSpan.FromSeconds(1));
        await Task.WhenAll(good).WaitAsync(HangGuard);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => bad.WaitAsync(HangGuard));
        Assert.Contains("has 10 values", error.Message);
        // The nine shared one batch (one wait), which failed; then each ran alone (a failed engine call records no size).
        Assert.Equal(new[] { 1000.0 }, measurements.Values("gati.batch.wait"));
        Assert.Equal(Enumerable.Repeat(1.0, 8), measurements.Values("gati.batch.size"));
    }

    [Fact]
    public async Task PredictAsync_ConcurrentRequests_AreAnsweredInSharedBatches()
    {
        // The batch delay is far longer than the test: only a full batch can start a batch.
        using var provider = Provider(b => b.FromFile(models.First), o =>
        {
            o.Device = "cpu";
            o.MaxBatchSize = 8;
            o.Batching = true;
            o.MaxBatchDelayMs = 60_000;
        });
        using var measurements = new ServingMeasurements(provider);
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var expected = Expected(models.First);
        var answers = await Task.WhenAll(Enumerable.Range(0, 24).Select(i => Task.Run(() => pool.PredictAsync(new Input { Image = models.Images[i] }))))
            .WaitAsync(HangGuard);
        Assert.Equal(new[] { 8.0, 8.0, 8.0 }, measurements.Values("gati.batch.size"));
        Assert.Equal(24, measurements.Values("gati.predictions").Sum());
        for (var i = 0; i < answers.Length; i++) Assert.Equal(expected[i].PredictedLabel, answers[i].PredictedLabel);
    }

    [Theory]
    [InlineData(ExecutionBackend.OnnxRuntime, false)]
    [InlineData(ExecutionBackend.TorchSharp, true)]
    public async Task Batching_ByDefault_IsOffForOnnxRuntimeOnTheCpuAndOnForTorchSharp(ExecutionBackend backend, bool batches)
    {
        using var provider = Provider(b => b.FromFile(models.First), o =>
        {
            o.Device = "cpu";
            o.Backend = backend;
            o.MaxBatchSize = 8;
            o.MaxBatchDelayMs = 60_000; // with batching, only full batches start: 16 requests make 2 calls
        });
        using var measurements = new ServingMeasurements(provider);
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        await Task.WhenAll(Enumerable.Range(0, 16).Select(i => Task.Run(() => pool.PredictAsync(new Input { Image = models.Images[i] })))).WaitAsync(HangGuard);
        Assert.Equal(batches ? [8.0, 8.0] : Enumerable.Repeat(1.0, 16), measurements.Values("gati.batch.size"));
    }

    [Fact]
    public async Task MaxBatchDelay_OnThePoolsClock_HoldsTheBatchOpenUntilTheFirstRequestsDelayEnds()
    {
        var clock = new ManualClock();
        using var provider = Provider(b => b.FromFile(models.First), o =>
        {
            o.Device = "cpu";
            o.Batching = true;
            o.MaxBatchDelayMs = 1000;
        }, clock);
        using var measurements = new ServingMeasurements(provider);
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var first = pool.PredictAsync(new Input { Image = models.Images[0] });
        await clock.WhenArmedAsync().WaitAsync(HangGuard);
        clock.Advance(TimeSpan.FromMilliseconds(500));
        var others = Enumerable.Range(1, 2).Select(i => pool.PredictAsync(new Input { Image = models.Images[i] })).ToArray();
        Assert.False(first.IsCompleted, "the batch ran before its delay was over");
        // The delay counts from the first request's arrival, not from the later ones.
        clock.Advance(TimeSpan.FromMilliseconds(500));
        await Task.WhenAll([first, .. others]).WaitAsync(HangGuard);
        Assert.Equal(new[] { 3.0 }, measurements.Values("gati.batch.size"));
        // The wait is measured on the clock: exactly the delay here, however coarse the timers.
        Assert.Equal(new[] { 1000.0 }, measurements.Values("gati.batch.wait"));
    }

    [Fact]
    public async Task PredictAsync_CancelledWhileWaitingForItsBatch_IsCancelledAndNeverRun()
    {
        var clock = new ManualClock();
        using var provider = Provider(b => b.FromFile(models.First), o =>
        {
            o.Device = "cpu";
            o.Batching = true;
            o.MaxBatchDelayMs = 1000;
        }, clock);
        using var measurements = new ServingMeasurements(provider);
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        using var cancel = new CancellationTokenSource();
        var cancelled = pool.PredictAsync(new Input { Image = models.Images[0] }, cancel.Token);
        var kept = Enumerable.Range(1, 2).Select(i => pool.PredictAsync(new Input { Image = models.Images[i] })).ToArray();
        await clock.WhenArmedAsync().WaitAsync(HangGuard);
        await cancel.CancelAsync();
        // The caller is released at once, not when the batch runs.
        var error = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(HangGuard));
        Assert.Equal(cancel.Token, error.CancellationToken);
        clock.Advance(TimeSpan.FromSeconds(1));
        await Task.WhenAll(kept).WaitAsync(HangGuard);
        Assert.Equal(new[] { 2.0 }, measurements.Values("gati.batch.size"));
        Assert.Equal(2, measurements.Values("gati.predictions").Sum());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task PredictAsync_BadInputOrCancelledToken_IsReportedThroughTheTask(bool batching)
    {
        using var provider = Provider(b => b.FromFile(models.First), o =>
        {
            o.Device = "cpu";
            o.Batching = batching;
        });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var bad = pool.PredictAsync(new Input { Image = new float[10] });
        var error = await Assert.ThrowsAsync<ArgumentException>(() => bad.WaitAsync(HangGuard));
        Assert.Contains("has 10 values", error.Message);
        using var cancel = new CancellationTokenSource();
        await cancel.CancelAsync();
        var cancelled = pool.PredictAsync(new Input { Image = models.Images[0] }, cancel.Token);
        Assert.True(cancelled.IsCanceled);
        Assert.Equal(cancel.Token, (await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled)).CancellationToken);
        // Still serving.
        Assert.Equal(Expected(models.First)[0].PredictedLabel, (await pool.PredictAsync(new Input { Image = models.Images[0] }).WaitAsync(HangGuard)).PredictedLabel);
    }

    [Fact]
    public async Task DisposeAsync_WhileABatchIsBeingCollected_FailsEveryWaitingRequestNamingThePool()
    {
        var clock = new ManualClock();
        using var provider = Provider(b => b.FromFile(models.First), o =>
        {
            o.Device = "cpu";
            o.Batching = true;
            o.MaxBatchDelayMs = 1000;
        }, clock);
        using var measurements = new ServingMeasurements(provider);
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        // No cancellation tokens: nothing but the pool can end these waits.
        var accepted = Enumerable.Range(0, 3).Select(i => pool.PredictAsync(new Input { Image = models.Images[i] })).ToArray();
        await clock.WhenArmedAsync().WaitAsync(HangGuard);
        await pool.DisposeAsync().AsTask().WaitAsync(HangGuard);
        foreach (var request in accepted)
        {
            var error = await Assert.ThrowsAsync<ObjectDisposedException>(() => request.WaitAsync(HangGuard));
            Assert.Equal("EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>", error.ObjectName);
        }
        Assert.Empty(measurements.Values("gati.batch.size"));
        // Usage after disposal is refused at once, naming the pool.
        var late = Assert.Throws<ObjectDisposedException>(() => { _ = pool.PredictAsync(new Input { Image = models.Images[0] }); });
        Assert.Equal("EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>", late.ObjectName);
        Assert.Equal("EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>", Assert.Throws<ObjectDisposedException>(() => pool.GetStatus()).ObjectName);
    }

    /// <summary>An input whose image getter blocks until released: holds the batcher inside an engine call.</summary>
    public sealed class GatedInput(float[] image, ManualResetEventSlim? gate = null)
    {
        public ManualResetEventSlim Entered { get; } = new();

        public float[] Image
        {
            get
            {
                Entered.Set();
                gate?.Wait(HangGuard);
                return image;
            }
        }
    }

    [Fact]
    public async Task DisposeAsync_WithRequestsQueuedBehindARunningBatch_FinishesTheRunningOneAndFailsTheRest()
    {
        var services = new ServiceCollection();
        services.AddEarlyExitPredictionEnginePool<GatedInput, EarlyExitPrediction>(o =>
        {
            o.Device = "cpu";
            o.Batching = true;
            o.MaxBatchSize = 1;
        }).FromFile(models.First);
        using var provider = services.BuildServiceProvider();
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<GatedInput, EarlyExitPrediction>>();
        using var gate = new ManualResetEventSlim();
        var blocking = new GatedInput(models.Images[0], gate);
        var running = pool.PredictAsync(blocking);
        Assert.True(blocking.Entered.Wait(HangGuard), "hang guard: the first batch never started");
        var queued = Enumerable.Range(1, 3).Select(i => pool.PredictAsync(new GatedInput(models.Images[i]))).ToArray();
        var disposing = pool.DisposeAsync().AsTask();
        Assert.False(disposing.IsCompleted, "disposal did not wait for the running batch");
        gate.Set();
        await disposing.WaitAsync(HangGuard);
        Assert.Equal(Expected(models.First)[0].PredictedLabel, (await running.WaitAsync(HangGuard)).PredictedLabel);
        foreach (var request in queued) await Assert.ThrowsAsync<ObjectDisposedException>(() => request.WaitAsync(HangGuard));
    }

    [Fact]
    public async Task PredictAsync_AfterABatchFailsAndItsErrorCannotBeLogged_LaterRequestsAreServed()
    {
        var services = new ServiceCollection();
        services.AddLogging(l => l.AddProvider(new FailingLoggerProvider()));
        services.AddEarlyExitPredictionEnginePool<FlakyInput, EarlyExitPrediction>(o =>
        {
            o.Device = "cpu";
            o.Batching = true;
        }).FromFile(models.First);
        using var provider = services.BuildServiceProvider();
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<FlakyInput, EarlyExitPrediction>>();
        var failing = pool.PredictAsync(new FlakyInput(models.Images[0], fail: true));
        var error = await Assert.ThrowsAnyAsync<Exception>(() => failing.WaitAsync(HangGuard));
        Assert.IsNotType<TimeoutException>(error);
        var later = await pool.PredictAsync(new FlakyInput(models.Images[1], fail: false)).WaitAsync(HangGuard);
        Assert.Equal(Expected(models.First)[1].PredictedLabel, later.PredictedLabel);
    }

    [Fact]
    public async Task PredictAsync_ReloadWhileABatchIsCollected_EachRequestIsAnsweredByTheGenerationItWasMadeOn()
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        var clock = new ManualClock();
        using var provider = Provider(b => b.FromFile(path), o =>
        {
            o.Device = "cpu";
            o.Batching = true;
            o.MaxBatchDelayMs = 1000;
        }, clock);
        using var measurements = new ServingMeasurements(provider);
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var before = pool.PredictAsync(new Input { Image = models.Images[4] });
        await clock.WhenArmedAsync().WaitAsync(HangGuard);
        File.Copy(models.Second, path, overwrite: true);
        pool.Reload();
        var after = pool.PredictAsync(new Input { Image = models.Images[4] });
        // The older request's batch closes when a request of the new generation arrives, without waiting for the delay.
        var old = await before.WaitAsync(HangGuard);
        Assert.False(after.IsCompleted, "the new generation's batch ran before its delay was over");
        clock.Advance(TimeSpan.FromSeconds(1));
        var fresh = await after.WaitAsync(HangGuard);
        Assert.True(Close(Expected(models.First)[4].Score, old.Score));
        Assert.True(Close(Expected(models.Second)[4].Score, fresh.Score));
        Assert.Equal(new[] { 1.0, 1.0 }, measurements.Values("gati.batch.size"));
        Assert.Equal(0, pool.RetiredGenerationsAlive());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task PredictWithStatusAsync_ReloadBetweenPreparingAndPredicting_PredictsOnThePreparedGeneration(bool batching)
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        using var provider = Provider(b => b.FromFile(path), o =>
        {
            o.Device = "cpu";
            o.Batching = batching;
        });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        // The reload swaps in a model with another input size and class count while the request is being prepared.
        var answer = await pool.PredictWithStatusAsync(EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>.DefaultModelName, status =>
        {
            Assert.Equal(784, status.InputShape.Size);
            File.Copy(models.Other, path, overwrite: true);
            pool.Reload();
            return new Input { Image = models.Images[2] };
        }).WaitAsync(HangGuard);
        Assert.Equal(10, answer.Model.ClassNames.Count);
        Assert.Equal(10, answer.Output.Score.Length);
        Assert.True(Close(Expected(models.First)[2].Score, answer.Output.Score));
        // The reload did happen: the next request is prepared for, and answered by, the new model.
        var next = await pool.PredictWithStatusAsync(EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>.DefaultModelName,
            status => new Input { Image = new float[status.InputShape.Size] }).WaitAsync(HangGuard);
        Assert.Equal(3, next.Model.ClassNames.Count);
        Assert.Equal(3, next.Output.Score.Length);
        Assert.True(next.Model.Generation > answer.Model.Generation);
        Assert.Equal(0, pool.RetiredGenerationsAlive());
    }

    [Fact]
    public async Task PredictWithStatusAsync_PrepareFails_FaultsTheTaskAndReleasesTheGeneration()
    {
        using var provider = Provider(b => b.FromFile(models.First));
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var failed = pool.PredictWithStatusAsync(EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>.DefaultModelName,
            _ => throw new ArgumentException("undecodable"));
        Assert.Equal("undecodable", (await Assert.ThrowsAsync<ArgumentException>(() => failed)).Message);
        pool.Reload();
        Assert.Equal(0, pool.RetiredGenerationsAlive());
    }

    [Fact]
    public void GetReloadToken_FiresWhenANewGenerationStartsServing()
    {
        using var temp = new TempDirectory();
        var path = temp.File("live.zip");
        File.Copy(models.First, path);
        using var provider = Provider(b => b.FromFile(path), o =>
        {
            o.Device = "cpu";
            o.ReloadAttempts = 1;
        });
        var pool = provider.GetRequiredService<EarlyExitPredictionEnginePool<Input, EarlyExitPrediction>>();
        var token = pool.GetReloadToken();
        var fired = 0;
        using var registration = token.RegisterChangeCallback(_ => Interlocked.Increment(ref fired), null);
        File.WriteAllText(path, "not a model");
        pool.Reload();
        Assert.False(token.HasChanged, "a failed reload keeps the old generation serving");
        File.Copy(models.Second, path, overwrite: true);
        pool.Reload();
        Assert.True(token.HasChanged);
        Assert.Equal(1, fired);
        Assert.False(pool.GetReloadToken().HasChanged);
    }
}
