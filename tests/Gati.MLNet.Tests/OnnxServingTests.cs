using Gati.MLNet.Inference;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

/// <summary>The ONNX Runtime backend and the ONNX export on a trained model with caches, against TorchSharp.</summary>
public sealed class OnnxServingTests(CachesFixture fixture) : IClassFixture<CachesFixture>
{
    private static readonly EarlyExitEngineOptions OnnxRuntime = new() { Backend = ExecutionBackend.OnnxRuntime, Device = "cpu" };
    private static readonly EarlyExitEngineOptions TorchSharp = new() { Backend = ExecutionBackend.TorchSharp };

    private static uint[] Labels(IDataView data, string column) => data.GetColumn<uint>(column).ToArray();

    [Fact]
    public void ExportOnnx_ApplyOnnxModel_GivesResNetTransformersLabels()
    {
        using var temp = new TempDirectory();
        var path = temp.File("base.onnx");
        var context = fixture.Context;
        context.Gati().ExportOnnx(fixture.Base.Model, path);
        var test = fixture.Base.Test;
        var expected = Labels(fixture.Base.Model.Transform(test), "PredictedLabel");

        var onnx = context.Transforms.ApplyOnnxModel(outputColumnNames: ["Score"], inputColumnNames: ["Image"], modelFile: path).Fit(test);
        var scores = onnx.Transform(test).GetColumn<float[]>("Score").ToArray();
        var actual = scores.Select(s => (uint)Array.IndexOf(s, s.Max()) + 1).ToArray();
        Assert.Equal(SmallModelFixture.TestRows, actual.Length);
        Assert.Equal(expected, actual);
        (onnx as IDisposable)?.Dispose();
    }

    [Fact]
    public void Engines_OnnxRuntimeAndTorchSharp_AgreeOnAnswersAndExits()
    {
        var images = fixture.Images(400).Select(i => new LearnedCachesTests.ImageInput { Image = i }).ToArray();
        using var ort = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches, OnnxRuntime);
        using var torch = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches, TorchSharp);
        Assert.Equal(ExecutionBackend.OnnxRuntime, ort.Backend);
        Assert.Contains("ONNX Runtime", ort.BackendDescription);
        foreach (var batch in new[] { 1, 7, 64 })
        {
            var fromOrt = images.Chunk(batch).SelectMany(ort.Predict).ToArray();
            var fromTorch = images.Chunk(batch).SelectMany(torch.Predict).ToArray();
            var sameExit = fromOrt.Zip(fromTorch).Count(p => p.First.ExitLayer == p.Second.ExitLayer);
            var sameLabel = fromOrt.Zip(fromTorch).Count(p => p.First.PredictedLabel == p.Second.PredictedLabel);
            // Exits may differ only where a selector sits within float rounding of its threshold: at most a row or two.
            Assert.True(sameExit >= images.Length - 2, $"batch {batch}: {images.Length - sameExit} rows exit elsewhere");
            Assert.True(sameLabel >= images.Length - 2, $"batch {batch}: {images.Length - sameLabel} labels differ");
            foreach (var (o, t) in fromOrt.Zip(fromTorch).Where(p => p.First.ExitLayer == p.Second.ExitLayer))
                Assert.True(o.Score.Zip(t.Score).All(s => Math.Abs(s.First - s.Second) < 1e-4), "probabilities of the same exit differ");
        }
    }

    [Fact]
    public void SavedModel_CarriesTheOnnxGraphs_AndServesTheSameAfterAFreshLoad()
    {
        using var temp = new TempDirectory();
        var path = temp.File("caches.zip");
        var chain = new TransformerChain<ITransformer>(fixture.Base.Model, fixture.Caches);
        fixture.Context.Gati().SaveModel(chain, fixture.Base.Train.Schema, path);
        using (var zip = System.IO.Compression.ZipFile.OpenRead(path))
        {
            // The base model's graph and one graph per cache, which the segments are cut from and fused with.
            Assert.Equal(fixture.Caches.Caches.Count + 1, zip.Entries.Count(e => e.Name.EndsWith(".onnx", StringComparison.Ordinal)));
            Assert.DoesNotContain(zip.Entries, e => e.Name.StartsWith("OnnxSegment", StringComparison.Ordinal));
        }

        var images = fixture.Images(100).Select(i => new LearnedCachesTests.ImageInput { Image = i }).ToArray();
        using var before = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches, OnnxRuntime);
        var expected = before.Predict(images);
        var context = new MLContext(0);
        var loaded = context.Gati().LoadModel(path, out _);
        try
        {
            using var after = context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(loaded, OnnxRuntime);
            var actual = after.Predict(images);
            Assert.Equal(expected.Select(e => (e.ExitLayer, e.PredictedLabel)), actual.Select(a => (a.ExitLayer, a.PredictedLabel)));
        }
        finally
        {
            (loaded as IDisposable)?.Dispose();
        }
    }

    [Fact]
    public void SingleGraphAtBatchOne_GivesTheSegmentCallsAnswersExitsAndProbabilities()
    {
        var images = fixture.Images(300).Select(i => new LearnedCachesTests.ImageInput { Image = i }).ToArray();
        var perSegment = new EarlyExitEngineOptions { Backend = ExecutionBackend.OnnxRuntime, Device = "cpu", SingleGraphAtBatchOne = false };
        using var single = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches, OnnxRuntime);
        using var segments = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches, perSegment);
        Assert.Contains("one graph at batch 1", single.BackendDescription);
        Assert.DoesNotContain("one graph", segments.BackendDescription);
        var fromSingle = images.Select(single.Predict).ToArray();
        var fromSegments = images.Select(segments.Predict).ToArray();
        Assert.Equal(fromSegments.Select(p => (p.ExitLayer, p.PredictedLabel)), fromSingle.Select(p => (p.ExitLayer, p.PredictedLabel)));
        foreach (var (a, b) in fromSingle.Zip(fromSegments))
            Assert.True(a.Score.Zip(b.Score).All(s => Math.Abs(s.First - s.Second) < 1e-5), "the single graph's probabilities differ from the segment calls'");
        // The test needs rows that exit at every cache and rows that reach the head, or it proves little.
        var exits = fromSingle.Select(p => p.ExitLayer).ToHashSet();
        Assert.Contains(0, exits);
        Assert.All(fixture.Caches.Caches, c => Assert.Contains(c.Layer, exits));
    }

    [Fact]
    public void TappedSingleGraph_GivesThePlainOnesAnswers_AndWhatEachCacheItReachedSaw()
    {
        // Online caches run the requests they keep on the tapped form: its answer must be the plain graph's, and its taps
        // the segment calls' activations, P(hit) and probabilities, for exactly the caches the request reached.
        var caches = fixture.Caches.Caches;
        // A backend whose tapped form is open answers every call alone on it: the plain graph's answers come from another.
        using var plainBackend = Inference.Backends.OnnxRuntimeBackend.Create(fixture.Caches.BaseModel, caches, OnnxRuntime);
        using var backend = Inference.Backends.OnnxRuntimeBackend.Create(fixture.Caches.BaseModel, caches, OnnxRuntime);
        Assert.True(backend.PrepareTapped());
        var thresholds = caches.Select(c => (float)c.Calibration.Threshold).ToArray();
        var classes = fixture.Caches.BaseModel.ClassCount;
        var exits = new HashSet<int>();
        foreach (var image in fixture.Images(300))
        {
            var plain = new float[classes];
            var tapped = new float[classes];
            Assert.True(plainBackend.TryRunOne(image, thresholds, plain, out var exit));
            var answer = new float[classes];
            Assert.True(backend.TryRunOne(image, thresholds, answer, out var answerExit));
            Assert.Equal(exit, answerExit);
            Assert.True(plain.Zip(answer).All(p => Math.Abs(p.First - p.Second) < 1e-5), "the tapped session's plain answer differs from the plain graph's");
            using var taps = backend.TryRunOneTapped(image, thresholds, tapped, out var tappedExit);
            Assert.NotNull(taps);
            Assert.Equal(exit, tappedExit);
            Assert.True(plain.Zip(tapped).All(p => Math.Abs(p.First - p.Second) < 1e-5), "the tapped graph's probabilities differ from the plain one's");
            exits.Add(exit);
            using var call = backend.Begin(0, image, 1, thresholds);
            for (var c = 0; c < caches.Count; c++)
            {
                Assert.Equal(c <= exit, taps!.Reached(c));
                if (c > exit)
                {
                    Assert.True(taps.Activation(c).IsEmpty && taps.LogProbabilities(c).IsEmpty && float.IsNaN(taps.HitProbability(c)));
                    continue;
                }
                var segment = call.Run(c);
                Assert.True(Math.Abs(segment.HitProbabilities[0] - taps.HitProbability(c)) < 1e-5, $"cache {c}: P(hit) {taps.HitProbability(c)} against {segment.HitProbabilities[0]} on segment calls");
                Assert.Equal(c == exit, taps.HitProbability(c) >= thresholds[c]);
                var logProbabilities = taps.LogProbabilities(c).ToArray();
                Assert.True(logProbabilities.Zip(segment.Probabilities.ToArray()).All(p => Math.Abs(MathF.Exp(p.First) - p.Second) < 1e-5), $"cache {c}: probabilities differ");
                var expected = call.Activation(c)[..caches[c].InputSize].ToArray();
                Assert.Equal(expected.Length, taps.Activation(c).Length);
                Assert.True(expected.Zip(taps.Activation(c).ToArray()).All(p => Math.Abs(p.First - p.Second) <= 1e-4 * Math.Max(1, Math.Abs(p.First))), $"cache {c}: activations differ");
            }
        }
        // Rows that exit at every cache and rows that reach the head, or the test proves little.
        Assert.Equal(Enumerable.Range(0, caches.Count + 1), exits.Order());
    }

    [Fact]
    public async Task PrepareTapped_WhileCallsRun_ClosesThePlainSessionUnderNone_AndAnswersStayThePlainOnes()
    {
        // PrepareTapped switches every call alone to the tapped session and closes the plain one: calls already on it must
        // end first, and calls racing the switch must answer on one session or the other, never on a closed one.
        var caches = fixture.Caches.Caches;
        var thresholds = caches.Select(c => (float)c.Calibration.Threshold).ToArray();
        var classes = fixture.Caches.BaseModel.ClassCount;
        var images = fixture.Images(40).ToArray();
        // One thread per call, set: no one-thread session for concurrent calls, so every call races on the plain or tapped one.
        var options = new EarlyExitEngineOptions { Backend = ExecutionBackend.OnnxRuntime, Device = "cpu", SingleGraphThreads = 1 };
        using var reference = Inference.Backends.OnnxRuntimeBackend.Create(fixture.Caches.BaseModel, caches, options);
        var expected = images.Select(image =>
        {
            var probabilities = new float[classes];
            Assert.True(reference.TryRunOne(image, thresholds, probabilities, out var exit));
            return (probabilities, exit);
        }).ToArray();
        for (var attempt = 0; attempt < 3; attempt++)
        {
            using var backend = Inference.Backends.OnnxRuntimeBackend.Create(fixture.Caches.BaseModel, caches, options);
            var sessions = backend.SingleGraph!;
            Assert.True(sessions.PlainSessionOpen);
            using var stop = new CancellationTokenSource();
            var calls = 0;
            var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
            var callers = Enumerable.Range(0, 3).Select(t => Task.Run(() =>
            {
                var probabilities = new float[classes];
                for (var i = t; !stop.IsCancellationRequested; i++)
                {
                    var k = i % images.Length;
                    backend.TryRunOne(images[k], thresholds, probabilities, out var exit);
                    if (exit != expected[k].exit || probabilities.Zip(expected[k].probabilities).Any(p => Math.Abs(p.First - p.Second) > 1e-5))
                        failures.Enqueue($"image {k}: exit {exit} against {expected[k].exit}");
                    Interlocked.Increment(ref calls);
                }
            })).ToArray();
            // A caller that failed ends its loop: stop waiting for calls then, and let WhenAll report why.
            async Task CallsReach(int count)
            {
                while (Volatile.Read(ref calls) < count && !callers.Any(c => c.IsCompleted)) await Task.Delay(1);
            }
            await CallsReach(10 * (attempt + 1));
            Assert.True(backend.PrepareTapped());
            Assert.False(sessions.PlainSessionOpen);
            var after = Volatile.Read(ref calls);
            await CallsReach(after + 30);
            await stop.CancelAsync();
            await Task.WhenAll(callers);
            Assert.Empty(failures);
        }
    }

    [Fact]
    public void SingleGraphAtBatchOne_ReadsThresholdsMovedWhileServing()
    {
        var images = fixture.Images(100).Select(i => new LearnedCachesTests.ImageInput { Image = i }).ToArray();
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches, OnnxRuntime);
        using var full = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Base.Model, OnnxRuntime);
        Assert.Contains(images.Select(engine.Predict), p => p.ExitLayer != 0);
        foreach (var cache in fixture.Caches.Caches) engine.Inner.SetThreshold(cache.Layer, float.PositiveInfinity);
        var closed = images.Select(engine.Predict).ToArray();
        Assert.All(closed, p => Assert.Equal(0, p.ExitLayer));
        Assert.Equal(images.Select(full.Predict).Select(p => p.PredictedLabel), closed.Select(p => p.PredictedLabel));

        // Open only the deepest cache: rows exit there or at the head, never earlier.
        var deepest = fixture.Caches.Caches.Max(c => c.Layer);
        engine.Inner.SetThreshold(deepest, 0f);
        Assert.All(images.Select(engine.Predict), p => Assert.Equal(deepest, p.ExitLayer));
    }

    [Fact]
    public void FirstOnnxRuntimeEngineOfAProcess_SetsUpTheSharedThreadPool()
    {
        // In a fresh process: this one's ONNX Runtime environment may already exist (other tests), which rightly
        // gives one thread per session. The engine must create the environment before it lists the providers.
        var path = Path.Combine(AppContext.BaseDirectory, "Assets", "learned-caches-format-1.1.zip");
        var (exit, log) = Processes.RunDotnet(Processes.SiblingAssembly("Gati.MLNet.ModelProbe"), ["engine-description", path, "2"]);
        Assert.True(exit == 0, log);
        Assert.Contains("(cpu, shared pool of 2 threads, one graph at batch 1: ", log);
    }

    [Fact]
    public void OnnxRuntimeEngine_ConcurrentCallers_GetTheSameAnswersAsOneCaller()
    {
        var images = fixture.Images(64).Select(i => new LearnedCachesTests.ImageInput { Image = i }).ToArray();
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches, OnnxRuntime);
        var expected = images.Select(i => engine.Predict(i).PredictedLabel).ToArray();
        var results = new uint[8][];
        Parallel.For(0, 8, t =>
        {
            var mine = new uint[images.Length];
            for (var round = 0; round < 5; round++)
                for (var i = 0; i < images.Length; i++) mine[i] = engine.Predict(images[(i + t) % images.Length]).PredictedLabel;
            results[t] = Enumerable.Range(0, images.Length).Select(i => mine[(i - t + images.Length) % images.Length]).ToArray();
        });
        Assert.All(results, r => Assert.Equal(expected, r));
    }

    [Theory]
    [InlineData("learned-caches-format-1.1.zip")] // before ONNX segments
    [InlineData("learned-caches-format-1.2.zip")] // segments exported from the TorchSharp weights (now read past)
    public void ModelOfAnEarlierFormat_LoadsServesOnBothBackendsAndResavesWithItsGraphs(string asset)
    {
        var path = Path.Combine(AppContext.BaseDirectory, "Assets", asset);
        var context = new MLContext(0);
        var loaded = context.Gati().LoadModel(path, out var schema);
        try
        {
            var caches = ((IEnumerable<ITransformer>)loaded).OfType<Transforms.LearnedCachesTransformer>().Single();
            Assert.Equal([4, 7], caches.Caches.Select(c => c.Layer));
            var images = fixture.Images(50).Select(i => new LearnedCachesTests.ImageInput { Image = i }).ToArray();
            using var ort = context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(loaded, OnnxRuntime);
            using var torch = context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(loaded, TorchSharp);
            var fromOrt = ort.Predict(images);
            var fromTorch = torch.Predict(images);
            Assert.True(fromOrt.Zip(fromTorch).Count(p => p.First.PredictedLabel == p.Second.PredictedLabel && p.First.ExitLayer == p.Second.ExitLayer) >= 49);

            // Saved again, it is a 1.3 model with the base model's and the two caches' graphs.
            using var temp = new TempDirectory();
            context.Gati().SaveModel(loaded, schema, temp.File("resaved.zip"));
            using var zip = System.IO.Compression.ZipFile.OpenRead(temp.File("resaved.zip"));
            Assert.Equal(3, zip.Entries.Count(e => e.Name.EndsWith(".onnx", StringComparison.Ordinal)));
        }
        finally
        {
            (loaded as IDisposable)?.Dispose();
        }
    }
}
