using Gati.MLNet.Data;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

/// <summary>Features of the small fixture model on real Fashion-MNIST: 1,500 training rows (a dump) and 500 held-out rows.</summary>
public sealed class PredictorFixture : IDisposable
{
    private readonly TempDirectory _temp = new();

    public PredictorFixture()
    {
        Base = new SmallModelFixture();
        Extractor = Base.Context.Gati().ExtractFeatures(Base.Model, 2, 8).Fit(Base.Test);
        var train = Base.Context.Data.TakeRows(Base.Context.Data.LoadFashionMnist(DatasetSplit.Train, Base.Directory), 1500);
        DumpDirectory = _temp.Sub("dump");
        FeatureDump.Write(Extractor, train, DumpDirectory, new FeatureDumpOptions { ChunkRows = 512, Source = "fashion-mnist train[0:1500]" });
        Train = Base.Context.Data.LoadFeatureDump(DumpDirectory);
        HeldOut = Extractor.Transform(Base.Test);
    }

    public SmallModelFixture Base { get; }

    public FeatureExtractingTransformer Extractor { get; }

    public string DumpDirectory { get; }

    public IDataView Train { get; }

    public IDataView HeldOut { get; }

    public MLContext Context => Base.Context;

    public static PredictorSetTrainer.Options Options(params PredictorSpec[] specs) => new()
    {
        Predictors = specs,
        Epochs = 3,
        BatchSize = 64,
        Seed = 3,
        Device = "cpu",
    };

    public void Dispose()
    {
        Extractor.Dispose();
        Base.Dispose();
        _temp.Dispose();
    }
}

[Collection(BitExactTrainingCollection.Name)]
public sealed class PredictorTrainerTests(PredictorFixture fixture) : IClassFixture<PredictorFixture>
{
    private static double Agreement(IDataView scored, string predicted, string teacher = "BasePredictedLabel")
    {
        var p = FeatureExtractionTests.Column(scored, predicted);
        var t = FeatureExtractionTests.Column(scored, teacher);
        return p.Zip(t).Count(pair => pair.First[0] == pair.Second[0]) / (double)p.Length;
    }

    private double MajorityShare()
    {
        var teacher = FeatureExtractionTests.Column(fixture.HeldOut, "BasePredictedLabel");
        return teacher.GroupBy(t => t[0]).Max(g => g.Count()) / (double)teacher.Length;
    }

    [Fact]
    public void Fit_Layer8PredictorsOnRealFeatures_AgreeWithTheBaseModelFarAboveChance()
    {
        var options = PredictorFixture.Options(new PredictorSpec(8, PredictorArchitecture.FC(64)), new PredictorSpec(8, PredictorArchitecture.Conv()));
        options.ValidationSet = fixture.HeldOut;
        var reports = new List<PredictorTrainingProgress>();
        options.Progress = new SynchronousProgress<PredictorTrainingProgress>(reports.Add);
        var chain = fixture.Context.Gati().Predictors(options).Fit(fixture.Train);
        var scored = chain.Transform(fixture.HeldOut);
        var chance = MajorityShare();
        foreach (var predictor in chain.Cast<PredictorTransformer>())
        {
            var agreement = Agreement(scored, predictor.PredictedLabelColumnName);
            Assert.True(agreement > Math.Max(0.6, chance + 0.2), $"{predictor.Architecture}: agreement {agreement:P1}, majority class {chance:P1}");
            Assert.Equal(predictor.Summary.ValidationAgreement, agreement, 6);
            Assert.InRange(predictor.Summary.BestEpoch, 1, 3);
        }
        Assert.Equal(6, reports.Count(r => r.EpochCompleted));
        Assert.All(reports.Where(r => r.EpochCompleted), r => Assert.NotNull(r.ValidationAgreement));
    }

    [Fact]
    public void Fit_Layer2FromAStreamedExtractor_Works()
    {
        // Stream mode: features computed by the base model while training (no dump).
        var streamed = fixture.Extractor.Transform(fixture.Context.Data.TakeRows(fixture.Base.Train, 600));
        var trainer = fixture.Context.Gati().Predictor(new PredictorTrainer.Options
        {
            Layer = 2, Architecture = PredictorArchitecture.Pool(256, 32), Epochs = 2, Device = "cpu", Seed = 1,
            ValidationSet = fixture.Context.Data.TakeRows(fixture.HeldOut, 200),
        });
        using var predictor = trainer.Fit(streamed);
        Assert.Equal("L2.pool256x32.Score", predictor.ScoreColumnName);
        Assert.Equal(8 * 28 * 28, predictor.InputSize);
        Assert.True(predictor.Summary.ValidationAgreement > MajorityShare() - 0.05);
        var scores = FeatureExtractionTests.Column(predictor.Transform(fixture.Context.Data.TakeRows(fixture.HeldOut, 5)), predictor.ScoreColumnName);
        Assert.All(scores, s => Assert.Equal(1f, s.Sum(v => MathF.Exp(v)), 3));
    }

    /// <summary>Layer 2 of <paramref name="data"/> times <paramref name="factor"/> plus <paramref name="offset"/>, with the teacher's logits and label.</summary>
    private IDataView ScaledLayer2(IDataView data, float factor, float offset = 0)
    {
        var features = FeatureExtractionTests.Column(data, "Layer2");
        var logits = FeatureExtractionTests.Column(data, "BaseLogits");
        var labels = FeatureExtractionTests.Column(data, "BasePredictedLabel");
        var rows = features.Select((f, i) => new ScaledRow
        {
            Layer2 = f.Select(v => v * factor + offset).ToArray(),
            BaseLogits = logits[i],
            BasePredictedLabel = (uint)labels[i][0] - 1, // ML.NET adds 1 when it reads a key from a row class
        });
        var schema = SchemaDefinition.Create(typeof(ScaledRow));
        schema[nameof(ScaledRow.Layer2)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, features[0].Length);
        schema[nameof(ScaledRow.BaseLogits)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, logits[0].Length);
        schema[nameof(ScaledRow.BasePredictedLabel)].ColumnType = new KeyDataViewType(typeof(uint), logits[0].Length);
        return fixture.Context.Data.LoadFromEnumerable(rows.ToArray(), schema);
    }

    private sealed class ScaledRow
    {
        public float[] Layer2 { get; set; } = [];
        public float[] BaseLogits { get; set; } = [];
        public uint BasePredictedLabel { get; set; }
    }

    [Fact]
    public void Fit_FcOnLargeFeatures_BoundsTheInputLayersStepAndStillLearns()
    {
        // Real layer-2 features times 16 (mean squared norm 256 times larger), as large as a deep network's wide early
        // layers: with the reference's single rate the FC predictor's first layer takes steps far too long for them.
        var train = ScaledLayer2(fixture.Train, 16);
        var heldOut = ScaledLayer2(fixture.HeldOut, 16);
        var chance = MajorityShare();
        var results = new Dictionary<string, (double Agreement, double? Scale)>();
        foreach (var (name, bound) in new (string, double?)[] { ("bounded", PredictorTrainingOptions.DefaultInputStepBound), ("reference", null) })
        {
            var options = PredictorFixture.Options(new PredictorSpec(2, PredictorArchitecture.FC(64)));
            options.InputStepBound = bound;
            options.StandardizeInputs = false; // the step bound alone
            options.ValidationSet = heldOut;
            var reports = new List<PredictorTrainingProgress>();
            options.Progress = new SynchronousProgress<PredictorTrainingProgress>(reports.Add);
            var predictor = fixture.Context.Gati().Predictors(options).Fit(train).Cast<PredictorTransformer>().Single();
            results[name] = (predictor.Summary.ValidationAgreement, reports.Last(r => r.EpochCompleted).InputRateScale);
        }
        var summary = string.Join("; ", results.Select(r => $"{r.Key}: {r.Value.Agreement:P1}, scale {r.Value.Scale}")) + $"; majority class {chance:P1}";
        Assert.InRange(results["bounded"].Scale ?? double.NaN, 1e-6, 0.5);
        Assert.Null(results["reference"].Scale);
        Assert.True(results["bounded"].Agreement > Math.Max(0.6, chance + 0.2), summary);
        Assert.True(results["bounded"].Agreement > results["reference"].Agreement + 0.05, summary);
    }

    [Theory]
    [InlineData("fc:64")]
    [InlineData("conv:3:1")]
    public void Fit_FeaturesInTheHundreds_LearnOnlyWhenStandardised_AndTheSavedNetworkReadsThemRaw(string architecture)
    {
        // Real layer-2 features times 40 plus 200: all positive and in the hundreds, like a pretrained backbone's fed
        // 0-255 pixels. Standardised while training (then folded into the first layer) the predictor learns; read raw,
        // plain SGD at the recipe's rate does not get far from a constant.
        var train = ScaledLayer2(fixture.Train, 40, 200);
        var heldOut = ScaledLayer2(fixture.HeldOut, 40, 200);
        var chance = MajorityShare();
        var results = new Dictionary<bool, double>();
        foreach (var standardize in new[] { true, false })
        {
            var options = PredictorFixture.Options(new PredictorSpec(2, PredictorArchitecture.Parse(architecture)));
            options.StandardizeInputs = standardize;
            options.ValidationSet = heldOut;
            using var chain = fixture.Context.Gati().Predictors(options).Fit(train);
            var predictor = chain.Cast<PredictorTransformer>().Single();
            // The transformer applies the saved network to the features as they are: its agreement is the one measured
            // while training on the standardised ones, so the fold is exact (up to float rounding of a few rows at most).
            var measured = Agreement(predictor.Transform(heldOut), predictor.PredictedLabelColumnName);
            Assert.InRange(measured, predictor.Summary.ValidationAgreement - 0.006, predictor.Summary.ValidationAgreement + 0.006);
            results[standardize] = measured;
        }
        var summary = $"standardised {results[true]:P1}, raw {results[false]:P1}, majority class {chance:P1}";
        Assert.True(results[true] > Math.Max(0.6, chance + 0.2), summary);
        Assert.True(results[true] > results[false] + 0.05, summary);
    }

    [Fact]
    public void Fit_LastLayerWithTheBaseModel_FcAndPoolStartAsItsHeadAndKeepThatStart()
    {
        PredictorSpec[] specs =
        [
            new(8, PredictorArchitecture.FC(64)), new(8, PredictorArchitecture.Pool(4096, 64)), new(8, PredictorArchitecture.Conv()),
            new(2, PredictorArchitecture.FC(64)),
        ];
        var options = PredictorFixture.Options(specs);
        options.Epochs = 2;
        options.BaseModel = fixture.Base.Model; // the dump does not record it
        options.ValidationSet = fixture.HeldOut;
        var reports = new List<PredictorTrainingProgress>();
        options.Progress = new SynchronousProgress<PredictorTrainingProgress>(reports.Add);
        var chain = fixture.Context.Gati().Predictors(options).Fit(fixture.Train);

        var starts = reports.Where(r => r is { EpochCompleted: true, Epoch: 0 }).ToArray();
        Assert.Equal(["L8 FC(64)", "L8 Pool(4096, 64)"], starts.Select(r => $"L{r.Layer} {r.Architecture}"));
        Assert.All(starts, r => Assert.Equal((1.0, true), (r.ValidationAgreement, r.Stopped)));
        var scored = chain.Transform(fixture.HeldOut);
        foreach (var predictor in chain.Cast<PredictorTransformer>())
        {
            var fromHead = predictor.Layer == 8 && predictor.Architecture.Kind != PredictorKind.Conv;
            var agreement = Agreement(scored, predictor.PredictedLabelColumnName);
            Assert.Equal(predictor.Summary.ValidationAgreement, agreement, 6);
            if (fromHead)
            {
                // The base model's own answer: no epoch can beat it, so the start is kept and not trained.
                Assert.Equal(new PredictorTrainingSummary(0, 0, 1.0), predictor.Summary);
            }
            else
            {
                Assert.InRange(predictor.Summary.BestEpoch, 1, 2);
                Assert.True(agreement < 1.0, $"{predictor.Layer} {predictor.Architecture}: {agreement:P2}");
            }
        }
    }

    [Fact]
    public void Fit_BaseHeadStartTurnedOff_EveryPredictorStartsFromRandomWeights()
    {
        var options = PredictorFixture.Options(new PredictorSpec(8, PredictorArchitecture.FC(64)));
        options.Epochs = 1;
        options.BaseModel = fixture.Base.Model;
        options.InitializeFromBaseHead = false;
        options.ValidationSet = fixture.HeldOut;
        var reports = new List<PredictorTrainingProgress>();
        options.Progress = new SynchronousProgress<PredictorTrainingProgress>(reports.Add);
        var predictor = fixture.Context.Gati().Predictors(options).Fit(fixture.Train).Cast<PredictorTransformer>().Single();
        Assert.DoesNotContain(reports, r => r.Epoch == 0);
        Assert.Equal(1, predictor.Summary.BestEpoch);
    }

    [Fact]
    public void Fit_BaseHeadStartInterruptedThenResumed_EqualsAnUninterruptedRun_AndOtherSettingsCannotResumeIt()
    {
        using var temp = new TempDirectory();
        PredictorSpec[] specs = [new(8, PredictorArchitecture.Pool(512, 64)), new(2, PredictorArchitecture.Conv(5, 5))];
        PredictorSetTrainer.Options Options(bool headStart = true)
        {
            var options = PredictorFixture.Options(specs);
            options.BaseModel = fixture.Base.Model;
            options.InitializeFromBaseHead = headStart;
            options.ValidationSet = fixture.HeldOut;
            return options;
        }
        var expected = fixture.Context.Gati().Predictors(Options()).Fit(fixture.Train);

        using var stop = new CancellationTokenSource();
        var first = Options();
        first.CheckpointPath = temp.File("p.ckpt");
        first.CancellationToken = stop.Token;
        first.Progress = new SynchronousProgress<PredictorTrainingProgress>(p =>
        {
            if (p is { EpochCompleted: true, Epoch: 2 }) stop.Cancel();
        });
        Assert.ThrowsAny<OperationCanceledException>(() => fixture.Context.Gati().Predictors(first).Fit(fixture.Train));

        var other = Options(headStart: false);
        other.CheckpointPath = first.CheckpointPath;
        other.Resume = true;
        var refused = Assert.Throws<InvalidOperationException>(() => fixture.Context.Gati().Predictors(other).Fit(fixture.Train));
        Assert.Contains("baseHeadStart: checkpoint 8:pool512x64, now (absent)", refused.Message);

        var second = Options();
        second.CheckpointPath = first.CheckpointPath;
        second.Resume = true;
        var restored = new List<PredictorTrainingProgress>();
        second.Progress = new SynchronousProgress<PredictorTrainingProgress>(restored.Add);
        var actual = fixture.Context.Gati().Predictors(second).Fit(fixture.Train);

        Assert.Equal(3, restored.Count(r => r.Restored)); // the start of the layer-8 predictor (agreeing on every row: not trained), two epochs of the other
        Assert.Single(restored, r => r is { Restored: true, Epoch: 0, BestEpoch: 0 });
        var sample = fixture.Context.Data.TakeRows(fixture.HeldOut, 50);
        foreach (var (e, a) in expected.Cast<PredictorTransformer>().Zip(actual.Cast<PredictorTransformer>()))
        {
            Assert.Equal(e.Summary, a.Summary);
            Assert.Equal(FeatureExtractionTests.Column(e.Transform(sample), e.ScoreColumnName), FeatureExtractionTests.Column(a.Transform(sample), a.ScoreColumnName));
        }
    }

    [Fact]
    public void Fit_NoImprovement_StopsAfterPatienceEpochs()
    {
        var options = PredictorFixture.Options(new PredictorSpec(8, PredictorArchitecture.Conv()));
        options.Epochs = 10;
        options.Patience = 1;
        options.LearningRate = 1e-12;
        options.ValidationSet = fixture.HeldOut;
        var chain = fixture.Context.Gati().Predictors(options).Fit(fixture.Train);
        var summary = chain.Cast<PredictorTransformer>().Single().Summary;
        Assert.Equal(1, summary.BestEpoch);
        Assert.Equal(2, summary.EpochsRun);
    }

    [Fact]
    public void Fit_InterruptedThenResumed_EqualsAnUninterruptedRun()
    {
        using var temp = new TempDirectory();
        PredictorSpec[] specs = [new(8, PredictorArchitecture.FC(32)), new(2, PredictorArchitecture.Conv(5, 5))];
        var reference = PredictorFixture.Options(specs);
        reference.ValidationSet = fixture.HeldOut;
        var expected = fixture.Context.Gati().Predictors(reference).Fit(fixture.Train);

        using var stop = new CancellationTokenSource();
        var first = PredictorFixture.Options(specs);
        first.ValidationSet = fixture.HeldOut;
        first.CheckpointPath = temp.File("p.ckpt");
        first.CancellationToken = stop.Token;
        first.Progress = new SynchronousProgress<PredictorTrainingProgress>(p =>
        {
            if (p is { EpochCompleted: true, Epoch: 2 }) stop.Cancel();
        });
        Assert.ThrowsAny<OperationCanceledException>(() => fixture.Context.Gati().Predictors(first).Fit(fixture.Train));

        var second = PredictorFixture.Options(specs);
        second.ValidationSet = fixture.HeldOut;
        second.CheckpointPath = first.CheckpointPath;
        second.Resume = true;
        var restored = new List<PredictorTrainingProgress>();
        second.Progress = new SynchronousProgress<PredictorTrainingProgress>(restored.Add);
        var actual = fixture.Context.Gati().Predictors(second).Fit(fixture.Train);

        Assert.Equal(4, restored.Count(r => r.Restored));
        var sample = fixture.Context.Data.TakeRows(fixture.HeldOut, 50);
        foreach (var (e, a) in expected.Cast<PredictorTransformer>().Zip(actual.Cast<PredictorTransformer>()))
        {
            Assert.Equal(e.Summary, a.Summary);
            Assert.Equal(FeatureExtractionTests.Column(e.Transform(sample), e.ScoreColumnName), FeatureExtractionTests.Column(a.Transform(sample), a.ScoreColumnName));
        }
    }

    [Fact]
    public void SaveLoad_BaseExtractorAndPredictors_RoundTripInAFreshProcess()
    {
        using var temp = new TempDirectory();
        var options = PredictorFixture.Options(new PredictorSpec(8, PredictorArchitecture.Conv()), new PredictorSpec(2, PredictorArchitecture.FC(16)));
        options.Epochs = 1;
        var predictors = fixture.Context.Gati().Predictors(options).Fit(fixture.Train);
        var chain = new TransformerChain<ITransformer>([fixture.Base.Model, fixture.Extractor, .. predictors]);
        var path = temp.File("chain.zip");
        fixture.Context.Gati().SaveModel(chain, fixture.Base.Test.Schema, path);

        string[] columns = ["L8.conv3s1.Score", "L8.conv3s1.PredictedLabel", "L2.fc16.Score", "Score"];
        var expected = new MemoryStream();
        using (var writer = new BinaryWriter(expected, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            var scored = chain.Transform(fixture.Base.Test);
            var values = columns.Select(c => FeatureExtractionTests.Column(scored, c)).ToArray();
            for (var row = 0; row < SmallModelFixture.TestRows; row++)
                foreach (var column in values)
                {
                    if (scored.Schema[columns[Array.IndexOf(values, column)]].Type is KeyDataViewType) writer.Write((uint)column[row][0]);
                    else foreach (var v in column[row]) writer.Write(v);
                }
        }
        var output = temp.File("out.bin");
        var (exit, log) = Processes.RunDotnet(Processes.SiblingAssembly("Gati.MLNet.ModelProbe"),
            [path, fixture.Base.Directory, "test", SmallModelFixture.TestRows.ToString(System.Globalization.CultureInfo.InvariantCulture), output, .. columns]);
        Assert.True(exit == 0, log);
        Assert.Equal(expected.ToArray(), File.ReadAllBytes(output));
    }

    [Fact]
    public void Fit_FeatureColumnMissing_SaysToExtractTheLayer()
    {
        var error = Assert.Throws<ArgumentException>(() =>
            fixture.Context.Gati().Predictor(new PredictorTrainer.Options { Layer = 5, Device = "cpu" }).Fit(fixture.Train));
        Assert.Contains("Layer5", error.Message);
    }
}
