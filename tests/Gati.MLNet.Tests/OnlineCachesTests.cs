using Xunit.Abstractions;
using Gati.MLNet.Inference;
using Gati.MLNet.Online;
using Gati.MLNet.Policy;
using Gati.MLNet.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

/// <summary>Shadowing, thresholds, reactions and updates on a real engine (ONNX Runtime) with trained caches.</summary>
public sealed class OnlineCachesTests(CachesFixture fixture, ITestOutputHelper output) : IClassFixture<CachesFixture>
{
    private static readonly EarlyExitEngineOptions Onnx = new() { Backend = ExecutionBackend.OnnxRuntime, Device = "cpu" };

    private EarlyExitEngine Engine() => EarlyExitEngine.Create(fixture.Caches.BaseModel, fixture.Caches.Caches, Onnx);

    /// <summary>Collects what an engine shadows.</summary>
    private sealed class Recorder(double fraction, bool fullRuns, bool copy = false) : IShadowTap
    {
        public List<ShadowRow> Rows { get; } = [];

        public bool CaptureFullRuns => fullRuns;

        public bool[]? KeepFullRuns(int count) => null;

        public void LeftOut(int count) => throw new InvalidOperationException("every full run is kept");

        public bool CopyActivations => copy;

        public bool[]? Choose(int count) => fraction <= 0 ? null : Enumerable.Range(0, count).Select(i => i % (int)Math.Round(1 / fraction) == 0).ToArray();

        public void Captured(IReadOnlyList<ShadowRow> rows)
        {
            lock (Rows) Rows.AddRange(rows);
        }
    }

    /// <summary>The TorchSharp activations of the base network at each cache layer, flattened, and its probabilities.</summary>
    private (float[][] Layers, float[] Probabilities) Reference(float[] image)
    {
        var network = fixture.Caches.BaseNetwork.Module;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var layers = fixture.Caches.Caches.Select(c => c.Layer).ToArray();
        var (logits, outputs) = network.ForwardWithLayers(tensor(image, [1, 1, 28, 28]), layers);
        return (outputs.Select(o => o.flatten().data<float>().ToArray()).ToArray(), nn.functional.softmax(logits, 1).flatten().data<float>().ToArray());
    }

    private static void Close(float[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        var worst = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
        Assert.True(worst <= tolerance * Math.Max(1e-3, expected.Max(Math.Abs)), $"max |difference| {worst}");
    }

    [Fact]
    public void Engine_NewGeneration_NumbersItsRowsAfterEveryRowOfTheOldOne()
    {
        // An update validates on the rows "since" the newest it trained on, and trains on the newest rows by number: a new
        // generation's rows must come after the old generation's, whichever engine served them.
        var images = fixture.Images(16).SelectMany(i => i).ToArray();
        var old = new Recorder(1, fullRuns: true);
        var next = new Recorder(1, fullRuns: true);
        using (var engine = Engine())
        {
            engine.Observer = new ShadowObserver(old);
            engine.Run(images, 16);
            engine.Run(images, 16);
        }
        using (var engine = Engine())
        {
            engine.Observer = new ShadowObserver(next);
            engine.Run(images, 16);
        }
        Assert.Equal(32, old.Rows.Count);
        Assert.Equal(16, next.Rows.Count);
        Assert.True(next.Rows.Min(r => r.Sequence) > old.Rows.Max(r => r.Sequence),
            $"old generation's rows {old.Rows.Min(r => r.Sequence)}-{old.Rows.Max(r => r.Sequence)}, new one's {next.Rows.Min(r => r.Sequence)}-{next.Rows.Max(r => r.Sequence)}");
        Assert.Equal(old.Rows.Count, old.Rows.Select(r => r.Sequence).Distinct().Count());
    }

    [Fact]
    public void Engine_AtBatchOne_ShadowsTheSameRowsAsInABatch()
    {
        // One input per call takes the single graph unless the tap sampled it; a row that ran in full is run again by
        // segments when the tap keeps full runs. Either way the tap must see exactly what a batched call shows it.
        var images = fixture.Images(64);
        using var engine = Engine();
        var batched = new Recorder(0.25, fullRuns: true);
        engine.Observer = new ShadowObserver(batched);
        var batch = engine.Run(images.SelectMany(i => i).ToArray(), images.Length);
        Assert.Contains(batch.ExitLayer, e => e == 0);
        // Calls 0, 4, 8, ... go to a tap that samples every input, the others to one that samples none: the rows
        // sampled are those of the batched call.
        var sampling = new Recorder(1, fullRuns: true);
        var notSampling = new Recorder(0, fullRuns: true);
        for (var i = 0; i < images.Length; i++)
        {
            engine.Observer = new ShadowObserver(i % 4 == 0 ? sampling : notSampling);
            var one = engine.Run(images[i], 1);
            Assert.Equal(batch.ExitLayer[i], one.ExitLayer[0]);
            Assert.Equal(batch.PredictedClass[i], one.PredictedClass[0]);
        }
        var byRow = sampling.Rows.Concat(notSampling.Rows).ToList();
        Assert.Equal(batched.Rows.Count, byRow.Count);
        Assert.Equal(batched.Rows.Select(r => (r.ExitLayer, r.Sampled)).Order(), byRow.Select(r => (r.ExitLayer, r.Sampled)).Order());
        Assert.All(byRow.Where(r => r.ExitLayer == 0), r => Assert.NotNull(r.BaseProbabilities));
        // At batch 1 the single graph answered: the caller paid for a copy of the input, not for activations.
        Assert.All(byRow, r =>
        {
            Assert.Equal(images[0].Length, r.Input!.Length);
            Assert.All(r.Features, Assert.Null);
        });
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Engine_AtBatchOne_CopyingTap_KeepsWhatEachCacheSaw(bool singleGraph)
    {
        // A tap that copies activations makes a kept request run on the single graph's tapped form (segment by segment
        // without a single graph): the row carries its layers' features up to where it stopped (every layer and the base
        // answer for a full run), what each cache it passed said, no input, and the same exit and class.
        var images = fixture.Images(48);
        using var engine = EarlyExitEngine.Create(fixture.Caches.BaseModel, fixture.Caches.Caches,
            new EarlyExitEngineOptions { Backend = ExecutionBackend.OnnxRuntime, Device = "cpu", SingleGraphAtBatchOne = singleGraph });
        Assert.Equal(singleGraph, engine.PrepareTapped());
        var batch = engine.Run(images.SelectMany(i => i).ToArray(), images.Length);
        Assert.Contains(batch.ExitLayer, e => e == 0);
        Assert.Contains(batch.ExitLayer, e => e > 0);
        var sampling = new Recorder(1, fullRuns: false, copy: true);
        var fullRunsOnly = new Recorder(0, fullRuns: true, copy: true);
        for (var i = 0; i < images.Length; i++)
        {
            engine.Observer = new ShadowObserver(i % 2 == 0 ? sampling : fullRunsOnly);
            var one = engine.Run(images[i], 1);
            Assert.Equal(batch.ExitLayer[i], one.ExitLayer[0]);
            Assert.Equal(batch.PredictedClass[i], one.PredictedClass[0]);
        }
        Assert.Equal(images.Length / 2, sampling.Rows.Count);
        Assert.Equal(Enumerable.Range(0, images.Length).Count(i => i % 2 == 1 && batch.ExitLayer[i] == 0), fullRunsOnly.Rows.Count);
        var layers = fixture.Caches.Caches.Select(c => c.Layer).ToArray();
        void Check(ShadowRow row, int position)
        {
            Assert.Null(row.Input);
            Assert.Equal(batch.ExitLayer[position], row.ExitLayer);
            var (reference, probabilities) = Reference(images[position]);
            for (var c = 0; c < layers.Length; c++)
            {
                if (row.ExitLayer == 0 || layers[c] <= row.ExitLayer) Close(reference[c], row.Features[c]!, 1e-4);
                else Assert.Null(row.Features[c]);
            }
            if (row.ExitLayer == 0) Close(probabilities, row.BaseProbabilities!, 1e-4);
            else Assert.Null(row.BaseProbabilities);
            // The caches it passed judged it (P(hit) below the threshold until the one it exited at); none after.
            for (var c = 0; c < layers.Length; c++)
            {
                var passed = row.ExitLayer == 0 || layers[c] <= row.ExitLayer;
                Assert.Equal(passed, !float.IsNaN(row.HitProbabilities[c]));
                Assert.Equal(passed, row.PredictedClasses[c] >= 0);
                if (!passed) continue;
                var threshold = engine.Thresholds[c];
                if (layers[c] == row.ExitLayer) Assert.True(row.HitProbabilities[c] >= threshold, $"layer {layers[c]}: exited with P(hit) {row.HitProbabilities[c]} < {threshold}");
                else Assert.True(row.HitProbabilities[c] < threshold, $"layer {layers[c]}: went on with P(hit) {row.HitProbabilities[c]} >= {threshold}");
                if (layers[c] == row.ExitLayer) Assert.Equal(row.ServedClass, row.PredictedClasses[c]);
            }
        }
        for (var k = 0; k < sampling.Rows.Count; k++) Check(sampling.Rows[k], 2 * k);
        var fullRunPositions = Enumerable.Range(0, images.Length).Where(i => i % 2 == 1 && batch.ExitLayer[i] == 0).ToArray();
        for (var k = 0; k < fullRunsOnly.Rows.Count; k++) Check(fullRunsOnly.Rows[k], fullRunPositions[k]);
    }

    [Fact]
    public void Sampler_ActivationSource_IsChosenByTimingAWholeRequestBothWays()
    {
        using var engine = Engine();
        using var sampler = new ShadowSampler(engine, new OnlineCacheOptions { SampleFraction = 0.5, AgreementTarget = 0.01, Updates = false, Seed = 3 });
        var choice = sampler.CopyActivations;
        output.WriteLine(choice.Reason);
        Assert.True(choice.SingleGraphMs > 0 && double.IsFinite(choice.SingleGraphMs), choice.Reason);
        Assert.True(choice.CopyingMs > 0 && double.IsFinite(choice.CopyingMs), choice.Reason);
        Assert.Equal(choice.CopyingMs <= choice.SingleGraphMs * (1 + ActivationCopy.MostExtra), choice.Copy);
        Assert.Contains("whole-network request", choice.Reason);
        Assert.Equal(choice.Copy, sampler.CopiesActivations);

        // Without a single graph every call runs segment by segment: activations are copied, nothing is timed.
        using var segments = EarlyExitEngine.Create(fixture.Caches.BaseModel, fixture.Caches.Caches,
            new EarlyExitEngineOptions { Backend = ExecutionBackend.OnnxRuntime, Device = "cpu", SingleGraphAtBatchOne = false });
        using var segmentSampler = new ShadowSampler(segments, new OnlineCacheOptions { SampleFraction = 0.5, AgreementTarget = 0.01, Updates = false, Seed = 3 });
        Assert.True(segmentSampler.CopiesActivations);
        Assert.True(double.IsNaN(segmentSampler.CopyActivations.SingleGraphMs));
        Assert.Contains("no single graph", segmentSampler.ActivationSource);
    }

    [Fact]
    public void Sampler_Paused_HoldsItsWorkerUntilResumed()
    {
        var images = fixture.Images(10);
        using var engine = Engine();
        using var sampler = new ShadowSampler(engine, new OnlineCacheOptions { SampleFraction = 1, AgreementTarget = 0.01, Updates = false, Seed = 3 });
        sampler.Pause();
        foreach (var image in images) engine.Run(image, 1);
        Assert.False(sampler.WaitForPending(TimeSpan.FromSeconds(1)), "a paused worker completed rows");
        sampler.Resume();
        Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up after Resume");
        Assert.Equal(0, sampler.Failed);
        Assert.Equal(images.Length, sampler.Window.Snapshot().Count(r => r.BaseProbabilities is not null && r.Features.All(f => f is not null)));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Sampler_SampledRowsGoBeforeFullRuns_WhichAreKeptOnlyForUpdates(bool copy)
    {
        var images = fixture.Images(40);
        using var engine = Engine();
        using (var watching = new ShadowSampler(engine, new OnlineCacheOptions { SampleFraction = 0, AgreementTarget = 0.01, Updates = false, Seed = 3 }))
        {
            foreach (var image in images) engine.Run(image, 1);
            Assert.True(watching.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
            // Without updates nothing reads full runs (they never enter the live agreement): none is kept.
            Assert.Equal(0, watching.Window.Count);
        }

        using var sampler = new ShadowSampler(engine, new OnlineCacheOptions { SampleFraction = 0.5, AgreementTarget = 0.01, Seed = 3, CopyActivationsOnRequest = copy });
        sampler.Pause();
        var served = images.Select(image => engine.Run(image, 1)).ToArray();
        sampler.Resume();
        Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
        var rows = sampler.Window.Snapshot();
        var sampled = rows.Count(r => r.Sampled);
        Assert.InRange(sampled, 5, 35);
        // With updates on, every full run is kept, sampled or not.
        Assert.Equal(served.Count(s => s.ExitLayer[0] == 0), rows.Count(r => r.ExitLayer == 0));
        Assert.Contains(rows, r => !r.Sampled);
        // Every row waited together (the worker was paused): the sampled ones, which judge the caches, were done first.
        Assert.All(rows.Take(sampled), r => Assert.True(r.Sampled));
        // Every request was drawn before its call: sampled, or kept should it run the whole network (all full runs are).
        Assert.Equal(images.Length, sampler.RowsDrawn);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Sampler_FullRunFraction_LeavesOutThatShareOfFullRunsBeforeAnyWork(bool copy)
    {
        var images = fixture.Images(120);
        using var engine = Engine();
        using var sampler = new ShadowSampler(engine, new OnlineCacheOptions { SampleFraction = 0.25, FullRunFraction = 0, AgreementTarget = 0.01, Seed = 3, CopyActivationsOnRequest = copy });
        var served = images.Select(image => engine.Run(image, 1)).ToArray();
        Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
        var rows = sampler.Window.Snapshot();
        // Only sampled rows are kept; every full run the sample did not draw was left out, and counted.
        Assert.All(rows, r => Assert.True(r.Sampled));
        var fullRuns = served.Count(s => s.ExitLayer[0] == 0);
        Assert.True(fullRuns > 0);
        Assert.Equal(fullRuns, sampler.FullRunsSkipped + rows.Count(r => r.ExitLayer == 0));
        Assert.Equal(0, sampler.Dropped);
        // Only the sampled requests were drawn to keep a row before their call (the rest kept none, on either path).
        Assert.Equal(rows.Length, sampler.RowsDrawn);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new OnlineCacheOptions { FullRunFraction = 1.5 }.Validate());
        Assert.Equal(nameof(OnlineCacheOptions.FullRunFraction), error.ParamName);
        error = Assert.Throws<ArgumentOutOfRangeException>(() => new OnlineCacheOptions { UpdateRows = 100 }.Validate());
        Assert.Contains("half of the sampled ones to calibrate on", error.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Sampler_KeptRows_AreCompletedOffTheRequestPath_FromTheirInputOrTheirCopiedActivations(bool copy)
    {
        // false: the single graph answers and the worker recomputes every layer from the input; true: the request runs
        // segment by segment and copies its activations, and the worker continues rows that exited early.
        var images = fixture.Images(40);
        using var engine = Engine();
        using var sampler = new ShadowSampler(engine, new OnlineCacheOptions { SampleFraction = 1, AgreementTarget = 0.01, Updates = false, Seed = 3, CopyActivationsOnRequest = copy });
        Assert.Equal(copy, sampler.CopiesActivations);
        Assert.EndsWith("(set)", sampler.ActivationSource);
        var served = images.Select(image => engine.Run(image, 1)).ToArray();
        Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
        Assert.Equal(0, sampler.Failed);
        Assert.Empty(sampler.Reactions); // every row was served with the thresholds it is checked against below
        var rows = sampler.Window.Snapshot();
        Assert.Equal(images.Length, rows.Length);
        Assert.Contains(rows, r => r.ExitLayer > 0);
        var reproduced = 0;
        for (var i = 0; i < rows.Length; i++)
        {
            var row = rows[i];
            Assert.Null(row.Input);
            Assert.True(row.Sampled);
            Assert.Equal(served[i].ExitLayer[0], row.ExitLayer);
            Assert.Equal(served[i].PredictedClass[0], row.ServedClass);
            var (layers, probabilities) = Reference(images[i]);
            for (var c = 0; c < layers.Length; c++)
            {
                Close(layers[c], row.Features[c]!, 1e-4);
                Assert.InRange(row.HitProbabilities[c], 0f, 1f);
                Assert.InRange(row.PredictedClasses[c], 0, 9);
            }
            Close(probabilities, row.BaseProbabilities!, 1e-4);
            // The row's own exit decision is reproduced from the recomputed P(hit) at the thresholds it was served with,
            // unless a P(hit) sits within float rounding of its threshold (the batch-1 graph and batched segments may then
            // round to different sides: the fixture's thresholds are some rows' P(hit) exactly).
            if (Enumerable.Range(0, layers.Length).Any(c => Math.Abs(row.HitProbabilities[c] - engine.Thresholds[c]) < 1e-5)) continue;
            var exit = Enumerable.Range(0, layers.Length).FirstOrDefault(c => row.HitProbabilities[c] >= engine.Thresholds[c], -1);
            Assert.True(row.ExitLayer == (exit < 0 ? 0 : fixture.Caches.Caches[exit].Layer),
                $"row {i} exited at {row.ExitLayer}; recomputed P(hit) {string.Join(", ", row.HitProbabilities)} at thresholds {string.Join(", ", engine.Thresholds)}");
            reproduced++;
        }
        Assert.True(reproduced >= rows.Length / 2, $"only {reproduced} of {rows.Length} rows were away from a threshold");
        Assert.Equal(images.Length, sampler.Agreement.Requests);
    }

    [Fact]
    public void Engine_ShadowedRows_CarryTheirLayersFeaturesAndTheBaseAnswer()
    {
        var images = fixture.Images(64);
        using var engine = Engine();
        var recorder = new Recorder(0.25, fullRuns: true);
        engine.Observer = new ShadowObserver(recorder);
        var batch = engine.Run(images.SelectMany(i => i).ToArray(), images.Length);
        var rows = recorder.Rows;
        Assert.Equal(Enumerable.Range(0, 64).Count(i => i % 4 == 0 || batch.ExitLayer[i] == 0), rows.Count);
        Assert.Contains(rows, r => r.Sampled && r.ExitLayer > 0);
        Assert.Contains(rows, r => !r.Sampled);
        // Rows arrive in batch order: the n-th shadowed row is the n-th position sampled or run in full.
        var positions = Enumerable.Range(0, 64).Where(i => i % 4 == 0 || batch.ExitLayer[i] == 0).ToArray();
        int Position(ShadowRow row) => positions[(int)(row.Sequence - rows[0].Sequence)];
        foreach (var row in rows)
        {
            var position = Position(row);
            Assert.Equal(batch.ExitLayer[position], row.ExitLayer);
            var (layers, probabilities) = Reference(images[position]);
            for (var c = 0; c < layers.Length; c++)
            {
                var cacheLayer = fixture.Caches.Caches[c].Layer;
                if (row.ExitLayer == 0 || cacheLayer <= row.ExitLayer) Close(layers[c], row.Features[c]!, 1e-4);
                else Assert.Null(row.Features[c]);
            }
            if (row.ExitLayer == 0) Close(probabilities, row.BaseProbabilities!, 1e-4);
            else Assert.Null(row.BaseProbabilities);
        }

        // Exited sampled rows learn the rest off the request path.
        var exited = rows.First(r => r.Sampled && r.ExitLayer > 0);
        var exitCache = fixture.Caches.Caches.Select(c => c.Layer).ToList().IndexOf(exited.ExitLayer);
        var (features, _, _, baseProbabilities) = engine.ContinueToEnd(exitCache, exited.Features[exitCache]!, 1);
        var reference = Reference(images[Position(exited)]);
        Close(reference.Probabilities, baseProbabilities, 1e-4);
        for (var j = 0; j < features.Length; j++) Close(reference.Layers[exitCache + 1 + j], features[j], 1e-4);

        // The shadow worker computes that on an engine of its own, every operator on its below-normal thread: the same answers.
        using var worker = engine.CreateBackgroundWorker();
        Assert.Contains("every call on its caller's thread", worker.BackendDescription);
        Assert.Equal(engine.Caches.Select(c => c.Layer), worker.Caches.Select(c => c.Layer));
        var (workerFeatures, _, _, workerProbabilities) = worker.ContinueToEnd(exitCache, exited.Features[exitCache]!, 1);
        Close(reference.Probabilities, workerProbabilities, 1e-4);
        for (var j = 0; j < workerFeatures.Length; j++) Close(reference.Layers[exitCache + 1 + j], workerFeatures[j], 1e-4);
    }

    [Fact]
    public void Engine_SetThreshold_MovesExitsWithoutNewSessions()
    {
        var images = fixture.Images(100).SelectMany(i => i).ToArray();
        using var engine = Engine();
        var before = engine.Run(images, 100).ExitLayer;
        var first = fixture.Caches.Caches[0].Layer;
        Assert.Contains(first, before);
        engine.SetThreshold(first, float.PositiveInfinity);
        Assert.DoesNotContain(first, engine.Run(images, 100).ExitLayer);
        engine.SetThreshold(first, 0f);
        Assert.All(engine.Run(images, 100).ExitLayer, e => Assert.Equal(first, e));
        Assert.Throws<ArgumentOutOfRangeException>(() => engine.SetThreshold(first, float.NaN));
        Assert.Throws<ArgumentException>(() => engine.SetThreshold(99, 0.5f));
    }

    [Fact]
    public void Create_WindowTooSmallForAnUpdate_SaysWhichSizesAndHowToFixIt()
    {
        using var engine = Engine();
        // What one complete row costs the window, from a real one.
        long rowBytes;
        using (var sampler = new ShadowSampler(engine, new OnlineCacheOptions { SampleFraction = 1, AgreementTarget = 0.01, Updates = false, Seed = 3 }))
        {
            engine.Run(fixture.Images(1)[0], 1);
            Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
            var row = Assert.Single(sampler.Window.Snapshot());
            Assert.True(CacheUpdater.Complete(row));
            rowBytes = row.Bytes;
        }
        // Room for 100 rows; an update needs 2 x 299 sampled rows (every other one calibrates, and 299 are the fewest on
        // which a perfect record shows 99 % at 95 %) + 150 to validate on.
        var options = new OnlineCacheOptions { WindowMegabytes = 100.5 * rowBytes / 1048576, ValidationRows = 150, AgreementTarget = 0.99, Confidence = 0.95 };
        var error = Assert.Throws<ArgumentException>(() => new OnlineCaches(fixture.Caches, engine, Onnx, options, (_, _) => { }));
        Assert.Contains("holds about 100 rows", error.Message);
        Assert.Contains("an update needs at least 748", error.Message);
        Assert.Contains("299 for 99.0 % at 95 % confidence", error.Message);
        Assert.Contains($"layer {fixture.Caches.Caches[0].Layer} {fixture.Caches.Caches[0].FeatureShape}", error.Message);
        Assert.Contains("or turn Updates off", error.Message);
        Assert.Null(engine.Observer);

        // Updates that could never gather the calibration rows they need are refused too, saying what to raise.
        var few = new OnlineCacheOptions { UpdateRows = 400, AgreementTarget = 0.99, Confidence = 0.95 };
        error = Assert.Throws<ArgumentException>(() => new OnlineCaches(fixture.Caches, engine, Onnx, few, (_, _) => { }));
        Assert.Contains("raise UpdateRows to at least 598", error.Message);
        error = Assert.Throws<ArgumentException>(() => new OnlineCaches(fixture.Caches, engine, Onnx, new OnlineCacheOptions { AgreementTarget = 1 }, (_, _) => { }));
        Assert.Contains("no number of rows shows a target of 100 %", error.Message);

        // Without updates the same window serves: reactions need no room for training.
        options.Updates = false;
        using var watching = new OnlineCaches(fixture.Caches, engine, Onnx, options, (_, _) => { });
        Assert.NotNull(engine.Observer);
    }

    [Theory]
    [InlineData(false)] // the worker reduces what it recomputed
    [InlineData(true)]  // the request reduces what it passed, the worker what it ran on
    public void Window_GridCaches_KeepsTheReducedFeatures_WhichAnUpdateTrainsOnForTheFullOnes(bool copy)
    {
        // Grid(2, 16) predictors read each channel's 2x2 cell means: the window keeps those (C·4 values a layer instead of
        // C·H·W), and everything the updater does with them must match what the serving predictors do with the full maps.
        var options = CachesFixture.SmallCachesOptions(predictorEpochs: 1, targetPrecision: 0.95, selectorEpochs: 5, heldOutRows: 400, seed: 5);
        using var model = fixture.Context.Gati().LearnedCaches([3, 6], Models.Predictors.PredictorArchitecture.Grid(2, 16), options)
            .Fit(fixture.Base.Model.Transform(fixture.Base.Train));
        var caches = model.Caches;
        Assert.All(caches, c => Assert.Equal(new Data.TensorShape(c.FeatureShape.Channels, 2, 2), c.ReducedFeatureShape));
        using var engine = EarlyExitEngine.Create(model.BaseModel, caches, Onnx);
        var images = fixture.Images(240);
        using var sampler = new ShadowSampler(engine, new OnlineCacheOptions { SampleFraction = 1, AgreementTarget = 0.01, Updates = false, Seed = 3, CopyActivationsOnRequest = copy });
        foreach (var image in images) engine.Run(image, 1);
        Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
        Assert.Equal(0, sampler.Failed);
        var rows = sampler.Window.Snapshot();
        Assert.Equal(images.Length, rows.Length);

        // The kept features are the grid of the base network's activations, not the activations.
        for (var i = 0; i < 8; i++)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var (_, layers) = model.BaseNetwork.Module.ForwardWithLayers(tensor(images[i], [1, 1, 28, 28]), caches.Select(c => c.Layer).ToArray());
            for (var c = 0; c < caches.Count; c++)
            {
                var expected = Models.FeatureReduction.Grid(2).Apply(layers[c].flatten(1), caches[c].FeatureShape).flatten().data<float>().ToArray();
                Close(expected, rows[i].Features[c]!, 1e-4);
            }
        }

        // Served again in simulation from the kept features, the rows exit where the engine sent them (away from a threshold).
        var segmentMs = new double[caches.Count + 1];
        Array.Fill(segmentMs, 1.0);
        var simulated = CacheUpdater.Simulate(caches, engine.Thresholds, rows, segmentMs, 0.95);
        var compared = 0;
        for (var r = 0; r < rows.Length; r++)
        {
            if (Enumerable.Range(0, caches.Count).Any(c => Math.Abs(rows[r].HitProbabilities[c] - engine.Thresholds[c]) < 1e-4)) continue;
            var exit = simulated.Outcomes[r].Exit;
            Assert.Equal(rows[r].ExitLayer, exit < 0 ? 0 : caches[exit].Layer);
            compared++;
        }
        Assert.True(compared >= rows.Length / 2, $"only {compared} of {rows.Length} rows were away from a threshold");

        // Thresholds recalibrated alone (the serving predictors and selectors) keep the exact bound on the update's
        // calibration rows: every other of the newest UpdateRows rows, all sampled here.
        var recalibration = new OnlineCacheOptions { AgreementTarget = 0.8, Confidence = 0.95, UpdateRows = 220 };
        var recalibrated = CacheUpdater.Recalibrate(caches, rows, recalibration, segmentMs);
        Assert.NotNull(recalibrated);
        var calibrationRows = rows.TakeLast(220).Where((_, i) => i % 2 == 1).ToArray();
        var onThem = CacheUpdater.Simulate(caches, recalibrated.Select(c => c.Threshold).ToArray(), calibrationRows, segmentMs, 0.95);
        Assert.True(onThem.Rows - onThem.Agreed <= Policy.AgreementBounds.AllowedDisagreements(calibrationRows.Length, 0.8, 0.95),
            $"{onThem.Rows - onThem.Agreed} disagreements on {onThem.Rows} rows");
        Assert.Null(CacheUpdater.Recalibrate(caches, rows.Take(150).ToArray(), recalibration, segmentMs));

        // An update fine-tunes on the most recent UpdateRows of the kept features and hands back caches that read the full
        // maps, computing the same.
        // 110 calibration rows cannot show 99 % at 95 % confidence even with no disagreement (299 can): no candidate.
        Assert.Equal(299, CacheUpdater.CalibrationRowsNeeded(new OnlineCacheOptions { AgreementTarget = 0.99, Confidence = 0.95 }));
        Assert.Null(CacheUpdater.Train(caches, rows, new OnlineCacheOptions { AgreementTarget = 0.99, Confidence = 0.95, Epochs = 1, UpdateRows = 220 }, segmentMs,
            new CpuThrottle(1), CancellationToken.None));
        var candidate = CacheUpdater.Train(caches, rows, new OnlineCacheOptions { AgreementTarget = 0.8, Epochs = 1, Seed = 3, UpdateRows = 220 }, segmentMs, new CpuThrottle(1), CancellationToken.None);
        Assert.NotNull(candidate);
        Assert.Equal(220, candidate.TrainRows + candidate.CalibrationRows);
        Assert.Equal(rows[^1].Sequence, candidate.TrainedThrough);
        // Each cache took one of its three predictors, and the summary says which and what each agreed on.
        Assert.Equal(caches.Count, System.Text.RegularExpressions.Regex.Matches(candidate.Summary,
            @"layer \d+: (serving|class prior|fine-tuned) predictor, agreement [\d.]+ % \(serving [\d.]+ %, class prior [\d.]+ %, fine-tuned [\d.]+ %\)").Count);
        try
        {
            for (var c = 0; c < caches.Count; c++)
            {
                var trained = candidate.Caches[c];
                Assert.Equal(caches[c].FeatureShape, trained.FeatureShape);
                Assert.Equal(caches[c].FeatureShape.Size, trained.Predictor.Module.InputSize);
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var (_, layers) = model.BaseNetwork.Module.ForwardWithLayers(tensor(images[0], [1, 1, 28, 28]), [caches[c].Layer]);
                var full = trained.Predictor.Module.forward(layers[0].flatten(1)).data<float>().ToArray();
                using var onReduced = trained.Predictor.Module.For(trained.ReducedFeatureShape);
                var reduced = onReduced.forward(tensor(rows[0].Features[c]!, [1, rows[0].Features[c]!.Length])).data<float>().ToArray();
                Close(full, reduced, 1e-4);
            }
        }
        finally
        {
            foreach (var cache in candidate.Caches) cache.Dispose();
        }
    }

    [Fact]
    public void Update_WorseThanTheServingCaches_IsRejected()
    {
        // A real update attempt whose fine-tuning ruins the predictors (a learning rate a thousand times the default):
        // the updater trains, calibrates and validates it on fresh rows as in serving, and must keep the serving caches. The
        // target is one the serving caches keep (about 85 % agreement on these rows), so only a better candidate may replace them.
        var images = fixture.Images(400);
        using var engine = Engine();
        var thresholds = engine.Thresholds.ToArray();
        var swaps = 0;
        var options = new OnlineCacheOptions
        {
            SampleFraction = 1, AgreementTarget = 0.75, Confidence = 0.95, UpdateEveryRows = 300, ValidationRows = 150, Epochs = 3,
            LearningRate = 5, CpuBudget = 1, Seed = 3, ReactOn = ReactionTrigger.UpperBound, MinimumExits = 1_000_000,
        };
        using var online = new OnlineCaches(fixture.Caches, engine, Onnx, options, (_, _) => Interlocked.Increment(ref swaps));
        var served = online.Model;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; online.Updates.Count == 0 && clock.Elapsed < TimeSpan.FromMinutes(5); i++)
        {
            engine.Run(images[i % images.Length], 1);
            // Past the first update's rows, leave the background threads time to label, train and validate.
            if (i >= options.UpdateEveryRows) Thread.Sleep(5);
        }
        var outcome = Assert.Single(online.Updates);
        Assert.False(outcome.Accepted, outcome.Reason);
        Assert.StartsWith("rejected", outcome.Reason);
        // The first attempt waited for the rows it needed, no more (nothing had backed it off or cut a wait short).
        Assert.Matches(@"^\d+ new labelled rows$", outcome.Trigger);
        // The candidate really was worse on the fresh rows: less agreement, or no faster than the serving caches.
        var figures = System.Text.RegularExpressions.Regex.Match(outcome.Reason,
            @"serving caches ([\d.]+) % agreement, ([\d.]+) ms expected; candidate ([\d.]+) %, ([\d.]+) ms");
        Assert.True(figures.Success, outcome.Reason);
        double Figure(int group) => double.Parse(figures.Groups[group].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(Figure(3) < Figure(1) || Figure(4) >= Figure(2) * 0.97, outcome.Reason);
        Assert.Equal(0, Volatile.Read(ref swaps));
        Assert.Same(served, online.Model);
        Assert.Equal(thresholds, engine.Thresholds);
    }

    [Theory]
    [InlineData(ReactionTrigger.Drop)]
    [InlineData(ReactionTrigger.LowerBound)]
    [InlineData(ReactionTrigger.UpperBound)]
    public void Sampler_CacheThatTurnsBad_IsTightenedWithinTheReactionWindow(ReactionTrigger trigger)
    {
        // Drift: after request 600 the images arrive inverted. The base model still answers (the reference), but the
        // first cache's predictor no longer agrees with it while its selector keeps exiting.
        var images = fixture.Images(400);
        using var engine = Engine();
        var options = new OnlineCacheOptions { SampleFraction = 0.25, AgreementTarget = 0.9, Confidence = 0.95, LiveWindow = 400, Updates = false, Seed = 1, ReactOn = trigger };
        using var sampler = new ShadowSampler(engine, options);
        using var full = EarlyExitEngine.Create(fixture.Caches.BaseModel, [], Onnx);
        var agreed = new List<bool>();
        var request = 0;
        var firstReaction = -1;
        sampler.Reacted += (_, _) =>
        {
            if (firstReaction < 0) firstReaction = Volatile.Read(ref request);
        };
        for (var i = 0; i < 3000; i++)
        {
            Volatile.Write(ref request, i);
            var image = images[i % images.Length];
            if (i >= 600) image = image.Select(v => -v).ToArray();
            var served = engine.Run(image, 1).PredictedClass[0];
            agreed.Add(served == full.Run(image, 1).PredictedClass[0]);
            // The continuation worker keeps up, as idle time between requests would let it: waited for, not slept on, so
            // a busy machine (the worker runs below normal priority) cannot delay the reaction by requests.
            if (i % 50 == 0) Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
        }
        Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
        Assert.NotEmpty(sampler.Reactions);
        // Rolling agreement over 200 requests: below the target for at most the documented reaction window.
        const int window = 200;
        var below = 0;
        var longest = 0;
        for (var end = 600 + window; end <= agreed.Count; end++)
        {
            var rate = agreed.Skip(end - window).Take(window).Count(a => a) / (double)window;
            below = rate < options.AgreementTarget ? below + 1 : 0;
            longest = Math.Max(longest, below);
        }
        var tail = agreed.TakeLast(800).Count(a => a) / 800.0;
        var drifted = agreed.Skip(600).Take(Math.Max(1, firstReaction - 600)).Count(a => a) / (double)Math.Max(1, firstReaction - 600);
        var what = $"first reaction at request {firstReaction}; agreement between the drift and it {drifted:P1}, over the last 800 requests {tail:P1}; rolling agreement below the target for {longest} requests (reactions: {string.Join(" | ", sampler.Reactions.Select(r => r.Reason))})";
        if (trigger != ReactionTrigger.UpperBound)
        {
            // The documented reaction window: back above the target within 1,200 requests, and it stays there.
            Assert.True(longest <= 1200 && tail >= options.AgreementTarget, what);
        }
        else
        {
            // On evidence only: the drop is acted on within 600 requests and agreement rises, but a shortfall smaller than
            // the live interval's half-width may stay (docs/online.md measures it).
            Assert.True(firstReaction is > 600 and <= 1200 && tail > drifted + 0.03, what);
        }
    }

    /// <summary>
    /// Serves 2,000 requests, then 4,000 through a changed camera (a third of the contrast, seeded noise), through caches
    /// that watch and react only; the base model's answer on each served image is the reference. Returns whether each
    /// request agreed, the request of each reaction, and the changes of traffic seen.
    /// </summary>
    private (bool[] Agreed, int[] Reactions, TrafficChange[] Changes, string Reasons) ServeThroughAChangeOfCamera(bool watchExitMix)
    {
        var images = fixture.Images(400);
        using var engine = Engine();
        var options = new OnlineCacheOptions
        {
            SampleFraction = 0.25, AgreementTarget = 0.9, Confidence = 0.95, LiveWindow = 2000, Updates = false, Seed = 1, WatchExitMix = watchExitMix,
        };
        using var sampler = new ShadowSampler(engine, options);
        using var full = EarlyExitEngine.Create(fixture.Caches.BaseModel, [], Onnx);
        var noise = new Random(7);
        var agreed = new List<bool>();
        var reactions = new List<int>();
        var request = 0;
        sampler.Reacted += (_, _) => reactions.Add(Volatile.Read(ref request));
        for (var i = 0; i < 6000; i++)
        {
            Volatile.Write(ref request, i);
            var image = images[i % images.Length];
            if (i >= 2000) image = image.Select(v => v / 3 + (float)(noise.NextDouble() - 0.5) * 0.4f).ToArray();
            var served = engine.Run(image, 1).PredictedClass[0];
            agreed.Add(served == full.Run(image, 1).PredictedClass[0]);
            if (i % 50 == 0) Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
        }
        Assert.True(sampler.WaitForPending(TimeSpan.FromMinutes(1)), "the shadow worker did not catch up");
        return (agreed.ToArray(), reactions.ToArray(), sampler.TrafficChanges.ToArray(), string.Join(" | ", sampler.Reactions.Select(r => r.Reason).Distinct()));
    }

    [Fact]
    public void Sampler_ChangeOfCamera_IsSeenInTheExitMixAndJudgedOnTheRequestsSinceIt()
    {
        var watched = ServeThroughAChangeOfCamera(watchExitMix: true);
        var unwatched = ServeThroughAChangeOfCamera(watchExitMix: false);
        string Describe((bool[] Agreed, int[] Reactions, TrafficChange[] Changes, string Reasons) run) =>
            $"agreement before {run.Agreed.Take(2000).Count(a => a) / 2000.0:P1}, 2000-4000 {run.Agreed.Skip(2000).Take(2000).Count(a => a) / 2000.0:P1}, 4000-6000 {run.Agreed.Skip(4000).Count(a => a) / 2000.0:P1}; reactions at {string.Join(", ", run.Reactions)}; changes at {string.Join(", ", run.Changes.Select(c => $"{c.Request} ({c.Distance:F2}, from sample {c.BeganAtSample})"))}; {run.Reasons}";
        var what = $"watched: {Describe(watched)}\nunwatched: {Describe(unwatched)}";
        // The exits moved at once: the change is seen within the first 800 requests after it, and never before.
        var change = Assert.Single(watched.Changes);
        Assert.True(change.Request is > 2000 and <= 2800, what);
        Assert.Empty(unwatched.Changes);
        // The rows since it are judged apart: the first reaction comes sooner than the live window (mostly from before the
        // change) allows, and the last 2,000 requests keep the target (97.3 % against 92.4 % unwatched, on a Zen 4 machine).
        Assert.True(watched.Reactions.Any(r => r > 2000), what);
        Assert.True(watched.Reactions.First(r => r > 2000) < unwatched.Reactions.Where(r => r > 2000).DefaultIfEmpty(6000).First(), what);
        Assert.True(watched.Agreed.Skip(4000).Count(a => a) / 2000.0 >= 0.9, what);
    }
}
