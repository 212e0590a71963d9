// The consumer check's app (PackageConsumerTests): a plain console app built outside the repository against the packed
// Gati.MLNet. "train FOLDER" trains a tiny base model and learned caches and saves them; "predict FOLDER", run as a
// new process, loads the saved model and serves the same images with early exit. Fixed seeds; small on purpose.
using Gati.MLNet;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Training;
using Microsoft.ML;

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
else
{
    Console.Error.WriteLine("usage: app train|predict FOLDER");
    return 2;
}
return 0;

static string Exits(EarlyExitPrediction[] answers) =>
    $"early exits: {answers.Count(a => a.ExitedEarly)} of {answers.Length} (" +
    string.Join(", ", answers.GroupBy(a => a.ExitLayer).OrderBy(g => g.Key).Select(g => $"{(g.Key == 0 ? "full model" : $"layer {g.Key}")}: {g.Count()}")) + ")";
