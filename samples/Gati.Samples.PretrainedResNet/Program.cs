using Gati.MLNet;
using Gati.MLNet.Inference;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Training;
using Microsoft.ML;
using Microsoft.ML.Data;

// Arguments: an image folder with train/ and test/ class folders (gati images writes Fashion-MNIST's), the rows that
// train the classifier, the rows that train the caches, and where to write the models.
var images = args.ElementAtOrDefault(0) ?? "out/pretrained/images";
var classifierRows = int.Parse(args.ElementAtOrDefault(1) ?? "2000");
var cacheRows = int.Parse(args.ElementAtOrDefault(2) ?? "2000");
var outputDir = args.ElementAtOrDefault(3) ?? "out/pretrained";
var ml = new MLContext(seed: 0);
var train = ml.Data.LoadImagePaths(Path.Combine(images, "train"), shuffleSeed: 0);   // ImagePath, Label
var test = ml.Data.LoadImagePaths(Path.Combine(images, "test"), shuffleSeed: 0);

// 1. ML.NET's image classification tutorial: image files resized to 224 x 224, the pretrained ResNet-18 featurizer
//    (NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18), a linear classifier on its 512 features.
var pipeline = ml.Transforms.LoadImages("ImageObject", imageFolder: "", "ImagePath")
    .Append(ml.Transforms.ResizeImages("ImageObject", 224, 224))
    .Append(ml.Transforms.ExtractPixels("Pixels", "ImageObject"))
    .Append(ml.Transforms.DnnFeaturizeImage("Features", m => m.ModelSelector.ResNet18(ml, m.OutputColumn, m.InputColumn), "Pixels"))
    .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy("Label", "Features"));
var trained = pipeline.Fit(ml.Data.TakeRows(train, classifierRows));
Directory.CreateDirectory(outputDir);
ml.Model.Save(trained, train.Schema, Path.Combine(outputDir, "pipeline.zip"));
var accuracy = ml.MulticlassClassification.Evaluate(trained.Transform(ml.Data.TakeRows(test, 500))).MicroAccuracy;
Console.WriteLine($"ML.NET pipeline: {accuracy:P1} accuracy on 500 test images");
if (cacheRows == 0) return;

// 2. The trained pipeline as a Gati base model (the featurizer's ONNX graph with the classifier folded in, cut after each
//    residual block), learned caches on three of its cut points, one zip for the whole.
var baseModel = ml.Gati().ImportBaseModel(trained, train.Schema);
using var caches = ml.Gati().LearnedCaches([3, 5, 7], PredictorArchitecture.Grid(), new LearnedCachesEstimator.Options
{
    Predictor = new() { Epochs = 10 },
    FeatureDumpDirectory = Path.Combine(outputDir, "sample-dump"),   // features computed once, pooled to a 4 x 4 grid
}).Fit(baseModel.Transform(ml.Data.TakeRows(ml.Data.SkipRows(train, classifierRows), cacheRows)));
var model = baseModel.Append(caches);
ml.Gati().SaveModel(model, train.Schema, Path.Combine(outputDir, "sample-early-exit.zip"));

// 3. Early exit by image path, as the tutorial predicts.
using var engine = ml.Gati().CreateEarlyExitEngine<ImageFile, EarlyExitPrediction>(model);
foreach (var path in test.GetColumn<string>("ImagePath").Take(5))
{
    var answer = engine.Predict(new ImageFile { ImagePath = path });
    Console.WriteLine($"{Path.GetFileName(path)}: {answer.PredictedClass}, exit {answer.ExitLayer} (0 = full model), {answer.LatencyMs:F1} ms");
}

/// <summary>What the tutorial's prediction engine reads: the path of an image file.</summary>
internal sealed class ImageFile
{
    public string ImagePath { get; set; } = "";
}
