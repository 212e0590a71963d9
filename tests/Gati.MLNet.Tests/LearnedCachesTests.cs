using Gati.MLNet.Inference;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Policy;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

/// <summary>The small base model with Conv(3, 1) caches on layers 3, 6 and 8, fitted on 2,000 real training rows.</summary>
public sealed class CachesFixture : IDisposable
{
    public CachesFixture()
    {
        Base = new SmallModelFixture();
        var options = SmallCachesOptions(predictorEpochs: 2, targetPrecision: 0.95, selectorEpochs: 10, heldOutRows: 800, seed: 5);
        Caches = Base.Context.Gati().LearnedCaches([3, 6, 8], PredictorArchitecture.Conv(), options).Fit(Base.Model.Transform(Base.Train));
    }

    /// <summary>Settings for caches small enough for a test: on the CPU, predictors without early stopping.</summary>
    public static LearnedCachesEstimator.Options SmallCachesOptions(int predictorEpochs, double targetPrecision, int selectorEpochs, int heldOutRows, int seed) => new()
    {
        Predictor = new LearnedCachesEstimator.PredictorOptions { Epochs = predictorEpochs, Patience = null },
        Selector = new SelectorTrainingSettings { TargetPrecision = targetPrecision, Epochs = selectorEpochs },
        HeldOutRows = heldOutRows,
        Device = "cpu",
        Seed = seed,
    };

    public SmallModelFixture Base { get; }

    public LearnedCachesTransformer Caches { get; }

    public MLContext Context => Base.Context;

    public float[][] Images(int count) => FeatureExtractionTests.Column(Context.Data.TakeRows(Base.Test, count), "Image");

    public void Dispose()
    {
        Caches.Dispose();
        Base.Dispose();
    }
}

public sealed class LearnedCachesTests(CachesFixture fixture) : IClassFixture<CachesFixture>
{
    public sealed class ImageInput
    {
        public float[] Image { get; set; } = [];
    }

    /// <summary>Reference semantics, one row at a time with the full forward: the first cache whose selector fires answers.</summary>
    private (int ExitLayer, int Class)[] Reference(LearnedCachesTransformer caches, float[][] images)
    {
        var network = fixture.Base.Model.Network;
        var result = new (int, int)[images.Length];
        using var noGrad = no_grad();
        for (var i = 0; i < images.Length; i++)
        {
            using var scope = NewDisposeScope();
            var (logits, outputs) = network.ForwardWithLayers(tensor(images[i], [1, 1, 28, 28]), caches.Caches.Select(c => c.Layer).ToArray());
            var hitProbabilities = new float[caches.Caches.Count];
            var classes = new int[caches.Caches.Count];
            for (var c = 0; c < caches.Caches.Count; c++)
            {
                var cache = caches.Caches[c];
                var logp = cache.Predictor.Module.forward(outputs[c].flatten(1));
                hitProbabilities[c] = cache.Selector.Module.HitProbability(logp).item<float>();
                classes[c] = (int)logp.argmax(1).item<long>();
            }
            var exit = ExitSimulation.ExitOf(hitProbabilities, caches.Caches.Select(c => c.Calibration.Threshold).ToArray());
            result[i] = exit == ExitSimulation.FullModel ? (0, (int)logits.argmax(1).item<long>()) : (caches.Caches[exit].Layer, classes[exit]);
        }
        return result;
    }

    [Fact]
    public void Fit_CalibratesEveryCacheToItsPrecisionTargetOnHeldOutRows()
    {
        Assert.Equal([3, 6, 8], fixture.Caches.Caches.Select(c => c.Layer));
        foreach (var cache in fixture.Caches.Caches)
        {
            var c = cache.Calibration;
            Assert.Equal(400, c.Rows);
            // Every cache must be usable: a dead Conv predictor or a collapsed selector (constant P(hit)) never exits.
            Assert.False(c.NeverExits, $"layer {cache.Layer} never exits: {cache}");
            Assert.True(c.Precision >= 0.95, $"layer {cache.Layer}: precision {c.Precision:P2}");
            Assert.InRange(c.HitRate, 0.2, 1);
        }
    }

    [Fact]
    public void Engine_MixedExitsInOneBatch_EqualsRowByRowReference()
    {
        var images = fixture.Images(200);
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(fixture.Caches);
        var batch = engine.Predict(images.Select(i => new ImageInput { Image = i }).ToArray());
        var reference = Reference(fixture.Caches, images);
        Assert.Equal(reference.Select(r => r.ExitLayer), batch.Select(b => b.ExitLayer));
        Assert.Equal(reference.Select(r => (uint)r.Class + 1), batch.Select(b => b.PredictedLabel));
        Assert.True(batch.Select(b => b.ExitLayer).Distinct().Count() >= 2, "the batch should mix exits and full runs");
        for (var i = 0; i < 20; i++)
        {
            var single = engine.Predict(new ImageInput { Image = images[i] });
            Assert.Equal(batch[i].ExitLayer, single.ExitLayer);
            Assert.Equal(batch[i].Score, single.Score, new FloatTolerance(1e-5f));
        }
    }

    [Fact]
    public void Engine_NoCacheHits_EqualsTheBaseModel()
    {
        using var never = fixture.Caches.WithCaches(fixture.Caches.Caches.Select(c => c.WithCalibration(c.Calibration with { Threshold = float.PositiveInfinity })));
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(never);
        var images = fixture.Images(64);
        var predictions = engine.Predict(images.Select(i => new ImageInput { Image = i }).ToArray());
        var baseScores = FeatureExtractionTests.Column(fixture.Base.Model.Transform(fixture.Context.Data.TakeRows(fixture.Base.Test, 64)), "Score");
        Assert.All(predictions, p => Assert.Equal(0, p.ExitLayer));
        for (var i = 0; i < 64; i++) Assert.Equal(baseScores[i], predictions[i].Score, new FloatTolerance(1e-5f));
    }

    [Fact]
    public void Engine_EveryCacheHits_EqualsTheFirstPredictor()
    {
        using var always = fixture.Caches.WithCaches(fixture.Caches.Caches.Select(c => c.WithCalibration(c.Calibration with { Threshold = float.NegativeInfinity })));
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(always);
        var images = fixture.Images(32);
        var predictions = engine.Predict(images.Select(i => new ImageInput { Image = i }).ToArray());
        Assert.All(predictions, p => Assert.Equal(3, p.ExitLayer));
        var first = fixture.Caches.Caches[0];
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var (_, outputs) = fixture.Base.Model.Network.ForwardWithLayers(tensor(images.SelectMany(i => i).ToArray(), [32, 1, 28, 28]), [3]);
        var expected = first.Predictor.Module.forward(outputs[0].flatten(1)).exp().data<float>().ToArray();
        Assert.Equal(expected, predictions.SelectMany(p => p.Score), new FloatTolerance(1e-5f));
    }

    [Fact]
    public void Engine_ConcurrentCallers_GetTheSameAnswersAsSequentialCalls()
    {
        var images = fixture.Images(120);
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(fixture.Caches);
        var sequential = images.Select(i => engine.Predict(new ImageInput { Image = i })).ToArray();
        var parallel = new EarlyExitPrediction[images.Length];
        Parallel.For(0, images.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            parallel[i] = i % 3 == 0
                ? engine.Predict(new ImageInput { Image = images[i] })
                : engine.Predict(images[i], 1)[0];
        });
        Assert.Equal(sequential.Select(s => (s.PredictedLabel, s.ExitLayer)), parallel.Select(p => (p.PredictedLabel, p.ExitLayer)));
    }

    [Fact]
    public void Engine_BadInput_GivesClearErrors()
    {
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(fixture.Caches);
        var wrong = Assert.Throws<ArgumentException>(() => engine.Predict(new ImageInput { Image = new float[100] }));
        Assert.Contains("has 100 values, but the model reads 1x28x28 = 784", wrong.Message);
        var image = new float[784];
        image[17] = float.NaN;
        Assert.Contains("NaN at index 17", Assert.Throws<ArgumentException>(() => engine.Predict(new ImageInput { Image = image })).Message);
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => engine.Predict(Array.Empty<ImageInput>())).Message);
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => engine.Predict(ReadOnlySpan<float>.Empty, 0)).Message);
        Assert.Contains("is null", Assert.Throws<ArgumentException>(() => engine.Predict(new ImageInput { Image = null! })).Message);
    }

    [Fact]
    public void CreateEngine_InputWithoutAnImageMember_ExplainsWhatItNeeds()
    {
        var error = Assert.Throws<ArgumentException>(() => fixture.Context.Gati().CreateEarlyExitEngine<WrongInput, EarlyExitPrediction>(fixture.Caches));
        Assert.Contains("float[] property or field named 'Image'", error.Message);
    }

    [Fact]
    public void Transform_UsesTheEngineAndMatchesIt()
    {
        var data = fixture.Context.Data.TakeRows(fixture.Base.Test, 100);
        var scored = fixture.Caches.Transform(data);
        var exits = new List<int>();
        using (var cursor = scored.GetRowCursor([scored.Schema["ExitLayer"]]))
        {
            var getter = cursor.GetGetter<int>(scored.Schema["ExitLayer"]);
            var value = 0;
            while (cursor.MoveNext())
            {
                getter(ref value);
                exits.Add(value);
            }
        }
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(fixture.Caches);
        var expected = engine.Predict(fixture.Images(100).Select(i => new ImageInput { Image = i }).ToArray());
        Assert.Equal(expected.Select(e => e.ExitLayer), exits);
        // Row by row, the transformer's answer and scores are the engine's.
        Assert.Equal(expected.Select(e => (float)e.PredictedLabel), FeatureExtractionTests.Column(scored, "EarlyExitPredictedLabel").Select(k => k[0]));
        var scores = FeatureExtractionTests.Column(scored, "EarlyExitScore");
        for (var i = 0; i < expected.Length; i++) Assert.Equal(expected[i].Score, scores[i], new FloatTolerance(1e-5f));
        // And so is the accuracy ML.NET's evaluator reports: exactly the share of the engine's answers that equal the label.
        var labels = FeatureExtractionTests.Column(scored, "Label").Select(k => (uint)k[0]).ToArray();
        var engineAccuracy = (double)expected.Where((e, i) => e.PredictedLabel == labels[i]).Count() / expected.Length;
        var metrics = fixture.Context.MulticlassClassification.Evaluate(scored, scoreColumnName: "EarlyExitScore", predictedLabelColumnName: "EarlyExitPredictedLabel");
        Assert.Equal(engineAccuracy, metrics.MicroAccuracy, 12);
    }

    [Fact]
    public void SaveLoad_BaseAndCachesChain_RoundTripsInAFreshProcess()
    {
        using var temp = new TempDirectory();
        var chain = new TransformerChain<ITransformer>(fixture.Base.Model, fixture.Caches);
        var path = temp.File("early-exit.zip");
        fixture.Context.Gati().SaveModel(chain, fixture.Base.Test.Schema, path);
        using (var zip = System.IO.Compression.ZipFile.OpenRead(path))
            // The base model's weights and graph, then each cache's predictor and selector weights and graph.
            Assert.Equal(2 + 3 * 3, zip.Entries.Count(e => e.FullName.StartsWith("GatiShared/", StringComparison.Ordinal)));

        var scored = chain.Transform(fixture.Base.Test);
        using var expected = new MemoryStream();
        using (var writer = new BinaryWriter(expected, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            var scores = FeatureExtractionTests.Column(scored, "EarlyExitScore");
            var labels = FeatureExtractionTests.Column(scored, "EarlyExitPredictedLabel");
            var exits = new List<int>();
            using (var cursor = scored.GetRowCursor([scored.Schema["ExitLayer"]]))
            {
                var getter = cursor.GetGetter<int>(scored.Schema["ExitLayer"]);
                var value = 0;
                while (cursor.MoveNext())
                {
                    getter(ref value);
                    exits.Add(value);
                }
            }
            for (var i = 0; i < scores.Length; i++)
            {
                foreach (var v in scores[i]) writer.Write(v);
                writer.Write((uint)labels[i][0]);
                writer.Write(exits[i]);
            }
        }
        var output = temp.File("out.bin");
        var (exit, log) = Processes.RunDotnet(Processes.SiblingAssembly("Gati.MLNet.ModelProbe"),
            [path, fixture.Base.Directory, "test", SmallModelFixture.TestRows.ToString(System.Globalization.CultureInfo.InvariantCulture), output,
             "EarlyExitScore", "EarlyExitPredictedLabel", "ExitLayer"]);
        Assert.True(exit == 0, log);
        Assert.Equal(expected.ToArray(), File.ReadAllBytes(output));

        var loaded = fixture.Context.Gati().LoadModel(path, out _);
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(loaded);
        Assert.Equal([3, 6, 8], engine.Caches.Select(c => c.Layer));
        Assert.Equal(fixture.Caches.Caches.Select(c => c.Calibration), engine.Caches.Select(c => c.Calibration));
    }

    [Fact]
    public void Pipeline_ResNetEstimatorAppendLearnedCaches_FitsAndServes()
    {
        var options = SmallModelFixture.Options();
        options.Epochs = 1;
        var pipeline = fixture.Context.Gati().ResNet(options)
            .Append(fixture.Context.Gati().LearnedCaches([4, 7], PredictorArchitecture.FC(16), new LearnedCachesEstimator.Options
            {
                Predictor = new LearnedCachesEstimator.PredictorOptions { Epochs = 1 },
                Selector = new SelectorTrainingSettings { Epochs = 2 },
                HeldOutRows = 200,
                Device = "cpu",
            }));
        var model = pipeline.Fit(fixture.Context.Data.TakeRows(fixture.Base.Train, 600));
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(model);
        Assert.Equal([4, 7], engine.Caches.Select(c => c.Layer));
        Assert.Equal(5, engine.Predict(fixture.Images(5).Select(i => new ImageInput { Image = i }).ToArray()).Length);
    }

    [Fact]
    public void Optimizer_OnMeasuredCandidates_MeetsItsConstraintsAndExplains()
    {
        var heldOut = fixture.Context.Data.SkipRows(fixture.Context.Data.TakeRows(fixture.Base.Train, 2000), 1600);
        var measurements = CacheMeasurements.Measure(fixture.Caches, heldOut, batchSize: 16, timingRuns: 10);
        Assert.Equal(400, measurements.Rows);
        Assert.Equal(fixture.Base.Model.Network.LayerCount + 1, measurements.BlockMs.Count);
        var plan = CacheOptimizer.Choose(measurements, new CacheConstraints(MinimumAgreement: 0.9));
        Assert.True(plan.ExpectedAgreement >= 0.9);
        Assert.True(plan.ExpectedMs <= plan.FullMs + 1e-9);
        Assert.Contains("Full model:", plan.Explanation);
        using var chosen = CacheOptimizer.Apply(plan, fixture.Caches);
        Assert.Equal(plan.Chosen.Select(c => c.Layer), chosen.Caches.Select(c => c.Layer));
        var tight = CacheOptimizer.Choose(measurements, new CacheConstraints(MinimumAgreement: 1.0, MemoryBudgetBytes: 0));
        Assert.Empty(tight.Chosen);
    }

    [Fact]
    public void Measure_OnTorchSharp_TimesTheNetworkOnItsDeviceWithTheSameDecisions()
    {
        // The backend factory's TorchSharp timing: same layout as ONNX Runtime's, the device the network was loaded on.
        var heldOut = fixture.Context.Data.SkipRows(fixture.Context.Data.TakeRows(fixture.Base.Train, 1700), 1600);
        var torch = CacheMeasurements.Measure(fixture.Caches, heldOut, batchSize: 4, timingRuns: 1, backend: ExecutionBackend.TorchSharp);
        var onnx = CacheMeasurements.Measure(fixture.Caches, heldOut, batchSize: 1, timingRuns: 1);
        Assert.Equal(ExecutionBackend.TorchSharp, torch.Backend);
        Assert.Equal(((Gati.MLNet.Models.ResNetBaseModel)fixture.Caches.BaseModel).Network.Device.ToString(), torch.Device);
        Assert.Equal(onnx.BlockMs.Count, torch.BlockMs.Count);
        Assert.All(torch.BlockMs.Concat(torch.BlockBatchMs), ms => Assert.True(ms > 0));
        Assert.Equal(onnx.Candidates.Select(c => c.HitRate), torch.Candidates.Select(c => c.HitRate));
        Assert.Contains("with TorchSharp", CacheOptimizer.Choose(torch, new CacheConstraints(MinimumAgreement: 0.9)).Explanation);
    }

    [Fact]
    public void Optimizer_ThresholdVariants_ShareNetworksAndDecideAsEachThresholdAlone()
    {
        using var variants = fixture.Caches.WithThresholdVariants([0.9, 0.95, 0.99, 0.999]);
        // Each fitted cache first, then its re-thresholded copies: one threshold each, sharing the fitted networks.
        foreach (var cache in fixture.Caches.Caches)
        {
            var mine = variants.Caches.Where(c => c.Layer == cache.Layer).ToArray();
            Assert.True(mine.Length >= 2, $"layer {cache.Layer}: no variant besides the fitted threshold");
            Assert.Equal(cache.Calibration.Threshold, mine[0].Calibration.Threshold);
            Assert.Equal(mine.Length, mine.Select(c => c.Calibration.Threshold).Distinct().Count());
            Assert.All(mine, c => Assert.Same(cache.Predictor, c.Predictor));
            Assert.All(mine, c => Assert.False(c.Calibration.NeverExits));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => fixture.Caches.WithThresholdVariants([1.5]));

        var heldOut = fixture.Context.Data.SkipRows(fixture.Context.Data.TakeRows(fixture.Base.Train, 2000), 1600);
        var measurements = CacheMeasurements.Measure(variants, heldOut, batchSize: 1, timingRuns: 5);
        Assert.Equal(variants.Caches.Count, measurements.Candidates.Count);
        // The networks run once per group of variants; every variant's exits are what its threshold alone decides.
        for (var i = 0; i < variants.Caches.Count; i++)
        {
            using var alone = variants.WithCaches([variants.Caches[i]]);
            var single = CacheMeasurements.Measure(alone, heldOut, batchSize: 1, timingRuns: 1);
            Assert.Equal(single.Exits[0], measurements.Exits[i]);
            Assert.Equal(single.Correct[0], measurements.Correct[i]);
            Assert.Equal(variants.Caches[i].Calibration.Threshold, measurements.Candidates[i].Threshold);
        }
        // A looser threshold exits on a superset of a stricter one's rows.
        foreach (var layer in measurements.Candidates.GroupBy(c => c.Layer))
        foreach (var (loose, strict) in layer.SelectMany(a => layer.Where(b => b.Threshold > a.Threshold).Select(b => (a, b))))
            Assert.All(Enumerable.Range(0, measurements.Rows), r => Assert.True(!measurements.Exits[strict.Index][r] || measurements.Exits[loose.Index][r]));

        var plan = CacheOptimizer.Choose(measurements, new CacheConstraints(MinimumAgreement: 0.9));
        Assert.Equal(plan.Chosen.Select(c => c.Layer).Distinct().Count(), plan.Chosen.Count);
        using var chosen = CacheOptimizer.Apply(plan, variants);
        Assert.Equal(plan.Chosen.Select(c => c.Threshold), chosen.Caches.Select(c => c.Calibration.Threshold));
        Assert.Contains("threshold (calibrated precision)", plan.Explanation);
    }

    public sealed class WrongInput
    {
        public double[] Pixels { get; set; } = [];
    }
}
