// The consumer check's app (PackageConsumerTests): a plain console app built outside the repository against the packed
// Gati.MLNet. "train FOLDER" trains a tiny base model and learned caches and saves them; "predict FOLDER", run as a
// new process, loads the saved model and serves the same images with early exit. "pretrained FOLDER" follows ML.NET's
// image classification tutorial on FOLDER/images (train/ and test/ class folders): the pretrained ResNet-18 featurizer
// and a linear trainer, then imports the fitted pipeline, adds learned caches, saves one zip, loads it and predicts by
// image path. Fixed seeds; small on purpose.
using Gati.MLNet;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Training;
using Microsoft.ML;
using Microsoft.ML.Data;

var ml = new MLContext(seed: 1);
var folder = args[1];
var modelPath = Path.Combine(folder, "early-exit.zip");
var answersPath = Path.Combine(folder, "answers.txt");
var images = ml.Data.CreateEnumerable<ImageInput>(ml.Data.TakeRows(ml.Data.LoadFashionMnist(DatasetSplit.Test), 100), reuseRowObject: false).ToArray();

if (args[0] == "train")
{
    var train = ml.Data.TakeRows(ml.Data.LoadFashionMnist(DatasetSplit.Train), 400);
    using var baseModel = ml.Gati().ResNet(new ResNetTrainer.Options { BaseWidth = 8, Epochs = 2, BatchSize = 32 }).Fit(train);
    // A low exit precision so that even this barely trained model exits early: the check is about the mechanics.
    using var caches = ml.Gati().LearnedCaches([5, 7], PredictorArchitecture.Conv(), new LearnedCachesEstimator.Options
    {
        Predictor = new() { Epochs = 1 },
        Selector = new() { Epochs = 2, TargetPrecision = 0.9, MinimumHits = 1 },
        HeldOutFraction = 0.3,
    }).Fit(baseModel.Transform(train));
    var earlyExit = baseModel.Append(caches);
    ml.Gati().SaveModel(earlyExit, train.Schema, modelPath);
    using var engine = ml.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(earlyExit);
    var answers = engine.Predict(images);
    File.WriteAllLines(answersPath, answers.Select(a => $"{a.PredictedLabel} {a.ExitLayer}"));
    Console.WriteLine($"trained and saved: {Path.GetFileName(modelPath)}");
    Console.WriteLine(Exits(answers));
}
else if (args[0] == "predict")
{
    var model = ml.Gati().LoadModel(modelPath, out _);
    using var engine = ml.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(model);
    var answers = engine.Predict(images);
    var expected = File.ReadAllLines(answersPath);
    var same = answers.Where((a, i) => $"{a.PredictedLabel} {a.ExitLayer}" == expected[i]).Count();
    Console.WriteLine($"loaded: {Path.GetFileName(modelPath)}, caches on layers {string.Join(",", engine.Caches.Select(c => c.Layer))}");
    Console.WriteLine(Exits(answers));
    Console.WriteLine($"same answers as the training process: {same} of {answers.Length}");
}
else if (args[0] == "pretrained")
{
    var train = ml.Data.LoadImagePaths(Path.Combine(folder, "images", "train"), shuffleSeed: 0);
    var test = ml.Data.LoadImagePaths(Path.Combine(folder, "images", "test"), shuffleSeed: 0);
    var pipeline = ml.Transforms.LoadImages("ImageObject", imageFolder: "", "ImagePath")
        .Append(ml.Transforms.ResizeImages("ImageObject", 224, 224))
        .Append(ml.Transforms.ExtractPixels("Pixels", "ImageObject"))
        .Append(ml.Transforms.DnnFeaturizeImage("Features", m => m.ModelSelector.ResNet18(ml, m.OutputColumn, m.InputColumn), "Pixels"))
        .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy("Label", "Features"));
    var trained = pipeline.Fit(train);
    var baseModel = ml.Gati().ImportBaseModel(trained, train.Schema);
    using var caches = ml.Gati().LearnedCaches([3, 5], PredictorArchitecture.Grid(), new LearnedCachesEstimator.Options
    {
        Predictor = new() { Epochs = 1 },
        Selector = new() { Epochs = 2, TargetPrecision = 0.9, MinimumHits = 1 },
        HeldOutFraction = 0.3,
    }).Fit(baseModel.Transform(train));
    var path = Path.Combine(folder, "pretrained-early-exit.zip");
    ml.Gati().SaveModel(baseModel.Append(caches), train.Schema, path);
    var loaded = ml.Gati().LoadModel(path, out _);
    using var engine = ml.Gati().CreateEarlyExitEngine<ImageFile, EarlyExitPrediction>(loaded);
    var paths = test.GetColumn<string>("ImagePath").ToArray();
    var answers = paths.Select(p => engine.Predict(new ImageFile { ImagePath = p })).ToArray();
    var pipelineLabels = ml.Data.CreateEnumerable<PipelineAnswer>(trained.Transform(test), reuseRowObject: false).Select(a => a.PredictedLabel).ToArray();
    var agree = answers.Zip(pipelineLabels).Count(p => p.First.PredictedLabel == p.Second);
    Console.WriteLine($"pretrained: caches on cut points {string.Join(",", engine.Caches.Select(c => c.Layer))}, {paths.Length} test images");
    Console.WriteLine(Exits(answers));
    Console.WriteLine($"answers equal to the ML.NET pipeline's: {agree} of {paths.Length} (exits at 90 % precision may differ)");
}
else
{
    Console.Error.WriteLine("usage: app train|predict|pretrained FOLDER");
    return 2;
}
return 0;

static string Exits(EarlyExitPrediction[] answers) =>
    $"early exits: {answers.Count(a => a.ExitedEarly)} of {answers.Length} (" +
    string.Join(", ", answers.GroupBy(a => a.ExitLayer).OrderBy(g => g.Key).Select(g => $"{(g.Key == 0 ? "full model" : $"layer {g.Key}")}: {g.Count()}")) + ")";

/// <summary>What the tutorial's prediction engine reads: the path of an image file.</summary>
internal sealed class ImageFile
{
    public string ImagePath { get; set; } = "";
}

/// <summary>The pipeline's predicted label (a key: 1-based, as the engine's PredictedLabel).</summary>
internal sealed class PipelineAnswer
{
    public uint PredictedLabel { get; set; }
}
