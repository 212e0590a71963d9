using Gati.MLNet.Data;
using Gati.MLNet.Import;
using Gati.MLNet.Inference;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

/// <summary>
/// Base models other than a Gati ResNet: a Gati ResNet exported and imported back, an ML.NET pipeline (ONNX featurizer
/// plus a linear trainer) made a base model, learned caches on it, and serving its zip without libtorch.
/// </summary>
public sealed class BaseModelImportTests(CachesFixture fixture) : IClassFixture<CachesFixture>
{
    private static readonly EarlyExitEngineOptions Onnx = new() { Backend = ExecutionBackend.OnnxRuntime, Device = "cpu", SingleGraphThreads = 1 };

    [Fact]
    public void ExportThenImport_GatiResNet_SameCutPointsAndTheSameEarlyExit()
    {
        using var temp = new TempDirectory();
        var path = temp.File("resnet.onnx");
        var context = fixture.Context;
        context.Gati().ExportOnnx(fixture.Base.Model, path);
        using var imported = context.Gati().ImportOnnxModel(path);

        var original = fixture.Caches.BaseModel;
        Assert.Equal(original.CutPoints.Select(c => (c.Number, c.Name, c.Shape)), imported.BaseModel.CutPoints.Select(c => (c.Number, c.Name, c.Shape)));
        Assert.Equal(original.ClassNames, imported.BaseModel.ClassNames);
        Assert.Equal(original.InputNormalization!.Mean, imported.BaseModel.InputNormalization!.Mean);

        // The same caches on the re-imported graph: segments cut from it behave as those cut from the ResNet's own graph.
        using var onImport = new LearnedCachesTransformer(context, imported.BaseModel.Acquire(), "Image", fixture.Caches.Caches.Select(c => c.Share()).ToArray(),
            new LearnedCachesTransformer.Columns(), 64);
        using var expected = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(fixture.Caches, Onnx);
        using var actual = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(onImport, Onnx);
        var images = fixture.Images(200).Select(i => new ImageInput { Image = i }).ToArray();
        foreach (var batch in new[] { 1, 64 })
        {
            var a = images.Chunk(batch).SelectMany(expected.Predict).ToArray();
            var b = images.Chunk(batch).SelectMany(actual.Predict).ToArray();
            Assert.Equal(a.Select(p => (p.ExitLayer, p.PredictedLabel)), b.Select(p => (p.ExitLayer, p.PredictedLabel)));
            Assert.All(a.Zip(b), p => Assert.True(p.First.Score.Zip(p.Second.Score).All(s => Math.Abs(s.First - s.Second) < 1e-5)));
        }
    }

    /// <summary>What a server that decodes images itself hands the engine: the base model's input, under the conventional name.</summary>
    public sealed class DecodedImage
    {
        public float[] Image { get; set; } = [];
    }

    /// <summary>The input of ML.NET's image tutorial's prediction engine.</summary>
    public sealed class ImageFile
    {
        public string ImagePath { get; set; } = "";
    }

    public sealed class Unrelated
    {
        public string Name { get; set; } = "";
    }

    [Fact]
    public void EarlyExitEngine_ImportedPipelineWithImageTransforms_ReadsWhatTheyReadOrAnImageMemberHoldingTheBaseInput()
    {
        // The tutorial's shape on real image files: LoadImages, ResizeImages, ExtractPixels (kept before the imported
        // base model, which reads 'Pixels'), a featurizer and a linear trainer.
        using var temp = new TempDirectory();
        var ml = new MLContext(1);
        ml.Data.ExportFashionMnistImages(temp.Sub("images"), DatasetSplit.Test, 60);
        var featurizer = temp.File("featurizer.onnx");
        File.WriteAllBytes(featurizer, OnnxImportTests.ResidualFeaturizer(seed: 7, withHead: false));
        var data = ml.Data.LoadImagePaths(temp.Sub("images"), shuffleSeed: 0);
        var prepare = ml.Transforms.LoadImages("ImageObject", imageFolder: "", "ImagePath")
            .Append(ml.Transforms.ResizeImages("ImageObject", 16, 16))
            .Append(ml.Transforms.ExtractPixels("Pixels", "ImageObject"));
        var pipeline = prepare
            .Append(ml.Transforms.ApplyOnnxModel(["Features"], ["Pixels"], featurizer))
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy("Label", "Features"))
            .Fit(data);
        var imported = ml.Gati().ImportBaseModel(pipeline, data.Schema);
        var paths = data.GetColumn<string>("ImagePath").Take(12).ToArray();
        var pixels = prepare.Fit(data).Transform(ml.Data.TakeRows(data, 12)).GetColumn<float[]>("Pixels").ToArray();

        using var byTransforms = ml.Gati().CreateEarlyExitEngine<ImageFile, EarlyExitPrediction>(imported, Onnx);
        using var byImage = ml.Gati().CreateEarlyExitEngine<DecodedImage, EarlyExitPrediction>(imported, Onnx);
        var a = paths.Select(p => byTransforms.Predict(new ImageFile { ImagePath = p })).ToArray();
        var b = pixels.Select(p => byImage.Predict(new DecodedImage { Image = p })).ToArray();
        Assert.Equal(a.Select(p => p.PredictedLabel), b.Select(p => p.PredictedLabel));
        Assert.All(a.Zip(b), p => Assert.True(p.First.Score.Zip(p.Second.Score).All(s => Math.Abs(s.First - s.Second) < 1e-6)));

        var refused = Assert.Throws<ArgumentException>(() => ml.Gati().CreateEarlyExitEngine<Unrelated, EarlyExitPrediction>(imported, Onnx));
        Assert.Contains("Unrelated has no float[] 'Pixels' (nor a float[] 'Image' holding it)", refused.Message);
    }

    /// <summary>Rows of a 3 x 16 x 16 "image" and a label that depends on it (three classes by the mean of the red plane).</summary>
    public sealed class PixelRow
    {
        [VectorType(3, 16, 16)]
        public float[] Pixels { get; set; } = [];

        public string Label { get; set; } = "";
    }

    private static PixelRow[] Rows(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var pixels = Enumerable.Range(0, 3 * 256).Select(_ => (float)random.NextDouble()).ToArray();
            var bias = random.Next(3);
            for (var i = 0; i < 256; i++) pixels[i] += 0.4f * bias;
            return new PixelRow { Pixels = pixels, Label = $"class{bias}" };
        }).ToArray();
    }

    private static (MLContext Context, IDataView Data, ITransformer Pipeline, string Featurizer) TrainedPipeline(TempDirectory temp, bool normalize,
        Func<MLContext, IEstimator<ITransformer>>? trainer = null)
    {
        var ml = new MLContext(1);
        var featurizer = temp.File("featurizer.onnx");
        File.WriteAllBytes(featurizer, OnnxImportTests.ResidualFeaturizer(seed: 7, withHead: false));
        var data = ml.Data.LoadFromEnumerable(Rows(300, 3));
        IEstimator<ITransformer> pipeline = ml.Transforms.ApplyOnnxModel(["Features"], ["Pixels"], featurizer);
        if (normalize) pipeline = pipeline.Append(ml.Transforms.NormalizeMeanVariance("Features"));
        pipeline = pipeline.Append(ml.Transforms.Conversion.MapValueToKey("Label"))
            .Append(trainer?.Invoke(ml) ?? ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy("Label", "Features"))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        return (ml, data, pipeline.Fit(data), featurizer);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ImportBaseModel_FeaturizerAndLinearTrainer_SameLabelsAndScoresAsThePipeline(bool normalize)
    {
        using var temp = new TempDirectory();
        var (ml, data, pipeline, _) = TrainedPipeline(temp, normalize);
        var imported = ml.Gati().ImportBaseModel(pipeline, data.Schema);
        var baseModel = Assert.IsType<ImportedModelTransformer>(Assert.Single(imported));
        Assert.Equal("Pixels", baseModel.ImageColumnName);
        // In the order of the trainer's label key (the order ML.NET met the values).
        var slotNames = default(VBuffer<ReadOnlyMemory<char>>);
        pipeline.GetOutputSchema(data.Schema)["Score"].GetSlotNames(ref slotNames);
        Assert.Equal(slotNames.DenseValues().Select(n => n.ToString()), baseModel.ClassNames);
        Assert.Equal(["class0", "class1", "class2"], baseModel.ClassNames.Order());
        Assert.Equal(["stem", "block", "down"], baseModel.BaseModel.CutPoints.Select(c => c.Name));

        var test = ml.Data.LoadFromEnumerable(Rows(120, 9));
        var expectedScores = pipeline.Transform(test).GetColumn<float[]>("Score").ToArray();
        var expectedLabels = pipeline.Transform(test).GetColumn<string>("PredictedLabel").ToArray();
        var scored = imported.Transform(test);
        var actualScores = scored.GetColumn<float[]>("Score").ToArray();
        var actualLabels = ml.Transforms.Conversion.MapKeyToValue("PredictedLabel").Fit(scored).Transform(scored).GetColumn<string>("PredictedLabel").ToArray();
        Assert.Equal(expectedLabels, actualLabels);
        Assert.All(expectedScores.Zip(actualScores), p => Assert.True(p.First.Zip(p.Second).All(s => Math.Abs(s.First - s.Second) < 1e-4)));

        // The imported base model alone is a Gati model zip (what gati import writes and gati fit-caches reads).
        var path = temp.File("imported.zip");
        ml.Gati().SaveModel(imported, data.Schema, path);
        var loaded = ml.Gati().LoadModel(path, out _);
        Assert.Equal(actualScores, loaded.Transform(test).GetColumn<float[]>("Score").ToArray());
    }

    [Fact]
    public void ImportBaseModel_TrainerThatIsNotLinear_IsRefusedNamingWhatIsSupported()
    {
        using var temp = new TempDirectory();
        var (ml, data, pipeline, _) = TrainedPipeline(temp, normalize: false, ml => ml.MulticlassClassification.Trainers.NaiveBayes("Label", "Features"));
        var error = Assert.Throws<ArgumentException>(() => ml.Gati().ImportBaseModel(pipeline, data.Schema));
        Assert.Contains("NaiveBayesMulticlassModelParameters", error.Message);
        Assert.Contains("LbfgsMaximumEntropy", error.Message);
    }

    [Fact]
    public void ImportedBaseModel_WithLearnedCaches_SavesAndServesWithoutLibtorch()
    {
        using var temp = new TempDirectory();
        var (ml, data, pipeline, _) = TrainedPipeline(temp, normalize: true);
        var imported = ml.Gati().ImportBaseModel(pipeline, data.Schema);
        var options = CachesFixture.SmallCachesOptions(predictorEpochs: 2, targetPrecision: 0.9, selectorEpochs: 5, heldOutRows: 100, seed: 1);
        using var caches = ml.Gati().LearnedCaches([1, 2], PredictorArchitecture.Grid(2, 16), options).Fit(imported.Transform(data));
        Assert.Equal([1, 2], caches.Caches.Select(c => c.Layer));
        // Grid predictors trained on 2 x 2 grids of the cut points' maps now read the full maps.
        Assert.Equal([new TensorShape(8, 16, 16), new(8, 16, 16)], caches.Caches.Select(c => c.FeatureShape));
        var model = imported.Append(caches);
        var path = temp.File("early-exit.zip");
        ml.Gati().SaveModel(model, data.Schema, path);

        // The engine answers as the transformer does.
        var test = ml.Data.LoadFromEnumerable(Rows(50, 11));
        var transformed = model.Transform(test);
        using var engine = ml.Gati().CreateEarlyExitEngine<PixelRow, EarlyExitPrediction>(model, Onnx);
        var rows = ml.Data.CreateEnumerable<PixelRow>(test, reuseRowObject: false).ToArray();
        var answers = engine.Predict(rows);
        Assert.Equal(transformed.GetColumn<int>("ExitLayer"), answers.Select(a => a.ExitLayer));

        // A fresh process serving the zip on ONNX Runtime never loads libtorch; nor does one serving a Gati ResNet's zip.
        var (exit, log) = Processes.RunDotnet(Processes.SiblingAssembly("Gati.MLNet.ModelProbe"), ["onnx-serving", path, "20"]);
        Assert.True(exit == 0, log);
        Assert.Contains("predicted 20", log);
        Assert.Contains("libtorch loaded: no", log);
        Assert.Contains("onnxruntime loaded: yes", log);
        var resnetZip = temp.File("resnet-early-exit.zip");
        fixture.Context.Gati().SaveModel(new TransformerChain<ITransformer>(fixture.Base.Model, fixture.Caches), fixture.Base.Train.Schema, resnetZip);
        (exit, log) = Processes.RunDotnet(Processes.SiblingAssembly("Gati.MLNet.ModelProbe"), ["onnx-serving", resnetZip, "20"]);
        Assert.True(exit == 0, log);
        Assert.Contains("libtorch loaded: no", log);
    }
}
