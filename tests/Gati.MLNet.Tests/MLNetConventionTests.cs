using System.Collections;
using System.Reflection;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

/// <summary>
/// A tiny pipeline built the way an ML.NET user writes one: the ResNet from ML.NET's own multiclass catalog, a cache
/// checkpoint, then learned caches that find the base model through the pipeline (width 4, 1 epoch, 320 real rows).
/// </summary>
public sealed class ConventionsFixture : IDisposable
{
    public ConventionsFixture()
    {
        Context = new MLContext(seed: 3);
        Train = Context.Data.TakeRows(Context.Data.LoadFashionMnist(DatasetSplit.Train, RealData.FashionMnistDirectory), 320);
        BaseOptions = TinyBase();
        CacheOptions = TinyCaches();
        BaseOptionsBefore = Snapshot.Of(BaseOptions);
        CacheOptionsBefore = Snapshot.Of(CacheOptions);
        Trainer = Context.MulticlassClassification.Trainers.ResNet(BaseOptions);
        var pipeline = Trainer.AppendCacheCheckpoint(Context).Append(Context.Gati().LearnedCaches([2], null, CacheOptions));
        Model = pipeline.Fit(Train);
    }

    public static ResNetTrainer.Options TinyBase() => new() { BaseWidth = 4, Epochs = 1, BatchSize = 64, Device = "cpu", Seed = 1 };

    public static LearnedCachesEstimator.Options TinyCaches() => new()
    {
        Architectures = [PredictorArchitecture.FC(8)],
        Predictor = new LearnedCachesEstimator.PredictorOptions { Epochs = 1, Patience = null },
        Selector = new SelectorTrainingSettings { TargetPrecision = 0.9, Epochs = 2 },
        HeldOutRows = 96,
        Device = "cpu",
        Seed = 2,
    };

    public MLContext Context { get; }

    public IDataView Train { get; }

    public ResNetTrainer.Options BaseOptions { get; }

    public LearnedCachesEstimator.Options CacheOptions { get; }

    public IReadOnlyDictionary<string, object?> BaseOptionsBefore { get; }

    public IReadOnlyDictionary<string, object?> CacheOptionsBefore { get; }

    public ResNetTrainer Trainer { get; }

    public TransformerChain<LearnedCachesTransformer> Model { get; }

    public ResNetTransformer BaseModel => ((IEnumerable<ITransformer>)Model).OfType<ResNetTransformer>().Single();

    public LearnedCachesTransformer Caches => Model.LastTransformer;

    public void Dispose()
    {
        foreach (var disposable in ((IEnumerable<ITransformer>)Model).OfType<IDisposable>()) disposable.Dispose();
    }
}

/// <summary>Public property values of an options object (lists compared by their items), to prove nothing changed them.</summary>
internal static class Snapshot
{
    public static IReadOnlyDictionary<string, object?> Of(object options) =>
        options.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.GetIndexParameters().Length == 0)
            .ToDictionary(p => p.Name, p => p.GetValue(options) is IEnumerable items and not string ? items.Cast<object?>().ToArray() : p.GetValue(options));

    public static void Unchanged(IReadOnlyDictionary<string, object?> before, object options)
    {
        foreach (var (name, now) in Of(options))
        {
            var then = before[name];
            if (then is object?[] list) Assert.True(now is object?[] items && list.SequenceEqual(items), $"{options.GetType().Name}.{name} changed");
            else Assert.True(Equals(then, now), $"{options.GetType().Name}.{name} changed: {then} -> {now}");
        }
    }
}

public sealed class MLNetConventionTests(ConventionsFixture fixture) : IClassFixture<ConventionsFixture>
{
    [Fact]
    public void MulticlassTrainersResNet_IsTheGatiTrainerAndMLNetEvaluatesIt()
    {
        Assert.IsType<ResNetTrainer>(fixture.Trainer);
        var metrics = fixture.Context.MulticlassClassification.Evaluate(fixture.BaseModel.Transform(fixture.Train));
        Assert.InRange(metrics.MicroAccuracy, 0, 1);
        Assert.Equal(10, metrics.PerClassLogLoss.Count);
    }

    [Fact]
    public void Pipeline_WithACacheCheckpoint_CachesFindTheBaseModelThroughThePipeline()
    {
        // AppendCacheCheckpoint puts an ML.NET CacheDataView between the two stages; the caches found the base model
        // anyway (the annotation on its outputs) and share its network.
        Assert.Same(fixture.BaseModel.Network, fixture.Caches.BaseNetwork.Module);
        var scored = fixture.Model.Transform(fixture.Context.Data.TakeRows(fixture.Train, 20));
        Assert.Equal(20, scored.GetColumn<int>("ExitLayer").Count());
    }

    [Fact]
    public void ExtractFeatures_AfterMLNetCacheAndTransforms_FindsTheBaseModel()
    {
        var ml = fixture.Context;
        var cached = ml.Data.Cache(fixture.BaseModel.Transform(fixture.Train)); // what AppendCacheCheckpoint inserts
        var data = ml.Transforms.CopyColumns("ImageCopy", "Image").Fit(cached).Transform(cached);
        using var extractor = ml.Gati().ExtractFeatures(3).Fit(data);
        Assert.Same(fixture.BaseModel.Network, ((Gati.MLNet.Models.ResNetBaseModel)((IBaseModelHolder)extractor).Base.Model).Network.Module);
    }

    [Fact]
    public void Fit_LeavesTheOptionsAndTheEstimatorsUnchanged()
    {
        Snapshot.Unchanged(fixture.BaseOptionsBefore, fixture.BaseOptions);
        Snapshot.Unchanged(fixture.CacheOptionsBefore, fixture.CacheOptions);
        // What a fit produced lives on what it returned, not on the estimator.
        Assert.Single(fixture.BaseModel.TrainingHistory);
        foreach (var estimator in new[] { typeof(ResNetTrainer), typeof(PredictorTrainer), typeof(PredictorSetTrainer), typeof(SelectorTrainer),
                     typeof(LearnedCachesEstimator), typeof(FeatureExtractingEstimator) })
            Assert.Empty(estimator.GetProperties(BindingFlags.Public | BindingFlags.Instance));
    }

    [Fact]
    public void LearnedCaches_WithOptions_CopiesThemAndKeepsTheirArchitecturesWhenNoneIsGiven()
    {
        var options = new LearnedCachesEstimator.Options { Architectures = [PredictorArchitecture.FC(16)], Device = "cpu" };
        var before = Snapshot.Of(options);

        var estimator = fixture.Context.Gati().LearnedCaches([3, 5], null, options);
        Snapshot.Unchanged(before, options);
        Assert.Equal([3, 5], estimator.Settings.Layers);
        Assert.Equal([PredictorArchitecture.FC(16)], estimator.Settings.Architectures);

        var conv = fixture.Context.Gati().LearnedCaches([4], PredictorArchitecture.Conv(), options);
        Snapshot.Unchanged(before, options);
        Assert.Equal([PredictorArchitecture.Conv()], conv.Settings.Architectures);
        Assert.Equal([PredictorArchitecture.Conv()], fixture.Context.Gati().LearnedCaches([4]).Settings.Architectures);
    }

    [Fact]
    public void Selector_WithOptions_FillsInACopy()
    {
        var ml = fixture.Context;
        var features = ml.Gati().ExtractFeatures(fixture.BaseModel, 2).Fit(fixture.Train).Transform(ml.Data.TakeRows(fixture.Train, 64));
        using var predictor = ml.Gati().Predictor(new PredictorTrainer.Options { Layer = 2, Architecture = PredictorArchitecture.FC(8), Epochs = 1, Device = "cpu" })
            .Fit(features);
        var options = new SelectorTrainer.Options { Device = "cpu" };
        var before = Snapshot.Of(options);

        var selector = ml.Gati().Selector(predictor, options);
        Snapshot.Unchanged(before, options);
        Assert.Equal(predictor.ScoreColumnName, selector.Settings.ScoreColumnName);
        Assert.Equal(2, selector.Settings.Layer);
    }

    [Fact]
    public void GetOutputSchema_NoBaseModelBeforeTheCaches_FailsBeforeAnythingTrains()
    {
        // EstimatorChain.Fit asks every estimator for its output schema before fitting the first one.
        var ml = fixture.Context;
        var pipeline = ml.Transforms.CopyColumns("Pixels", "Image").Append(ml.Gati().LearnedCaches([3], null, ConventionsFixture.TinyCaches()));
        var error = Assert.Throws<ArgumentException>(() => pipeline.Fit(fixture.Train));
        Assert.Contains("needs the base model", error.Message);
        Assert.Throws<ArgumentException>(() => ml.Transforms.CopyColumns("Pixels", "Image").Append(ml.Gati().ExtractFeatures(3)).Fit(fixture.Train));
    }

    [Fact]
    public void GetOutputSchema_ImageColumnDroppedBeforeTheCaches_FailsBeforeTheBaseModelTrains()
    {
        var ml = fixture.Context;
        var epochs = 0;
        var options = ConventionsFixture.TinyBase();
        options.Progress = new SynchronousProgress<ResNetTrainingProgress>(_ => epochs++);
        var pipeline = ml.Gati().ResNet(options)
            .Append(ml.Transforms.DropColumns("Image"))
            .Append(ml.Gati().LearnedCaches([3], null, ConventionsFixture.TinyCaches()));

        var error = Assert.Throws<ArgumentException>(() => pipeline.Fit(fixture.Train));
        Assert.Contains("Image column 'Image'", error.Message);
        Assert.Equal(0, epochs);
    }

    [Fact]
    public void GetOutputSchema_BaseModelGivenButImageMissing_NamesTheColumn()
    {
        var ml = fixture.Context;
        var options = ConventionsFixture.TinyCaches();
        options.Layers = [2];
        var pipeline = ml.Transforms.DropColumns("Image").Append(ml.Gati().LearnedCaches(fixture.BaseModel, options));
        var error = Assert.Throws<ArgumentException>(() => pipeline.Fit(fixture.Train));
        Assert.Contains("'Image'", error.Message);
    }

    [Fact]
    public void LearnedCaches_TooFewRowsToHoldOut_IsAnArgumentError()
    {
        var ml = fixture.Context;
        var options = ConventionsFixture.TinyCaches();
        options.Layers = [2];
        options.HeldOutRows = 400;
        var error = Assert.Throws<ArgumentException>(() => ml.Gati().LearnedCaches(fixture.BaseModel, options).Fit(fixture.BaseModel.Transform(fixture.Train)));
        Assert.Contains("Cannot hold out 400 of 320 rows", error.Message);
    }

    [Fact]
    public void ImageInput_ReadsImagesOutOfADataViewAndFeedsTheEngine()
    {
        var ml = fixture.Context;
        var images = ml.Data.CreateEnumerable<ImageInput>(ml.Data.TakeRows(fixture.Train, 3), reuseRowObject: false).ToArray();
        Assert.All(images, i => Assert.Equal(784, i.Image.Length));
        using var engine = ml.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(fixture.Model);
        Assert.Equal(3, engine.Predict(images).Length);

        var raw = Enumerable.Range(0, 784).Select(i => i / 784f).ToArray();
        var expected = raw.ToArray();
        engine.InputNormalization?.Normalize(raw, expected);
        Assert.NotNull(engine.InputNormalization); // the Fashion-MNIST loader records it
        Assert.Equal(expected, ImageInput.FromPixels(raw, engine.InputNormalization).Image);
    }
}

public sealed class MLNetVersionTests
{
    [Theory]
    [InlineData("6.0.0+a4f730ec0c9106c2c9ef9e1fa34011374115fb98")]
    [InlineData("6.0.3")]
    [InlineData("6.0.0-preview.1")]
    public void Describe_SameMinorVersion_IsFine(string loaded) => Assert.Null(MLNetVersion.Describe(loaded, "6.0.0", "Microsoft.ML.Data"));

    [Theory]
    [InlineData("6.1.0+abc")]
    [InlineData("5.0.1")]
    [InlineData("7.0.0")]
    [InlineData(null)]
    public void Describe_OtherMinorVersion_ExplainsWhatToReference(string? loaded)
    {
        var problem = MLNetVersion.Describe(loaded, "6.0.0", "Microsoft.ML.Data");
        Assert.NotNull(problem);
        Assert.Contains("works with ML.NET 6.0.x only", problem);
        Assert.Contains("Reference Microsoft.ML 6.0.0", problem);
    }

    [Fact]
    public void EnsureSupported_TheMLNetThisBuildShipsWith_Passes()
    {
        Assert.Equal("6.0.0", MLNetVersion.CompiledAgainst);
        MLNetVersion.EnsureSupported();
    }
}
