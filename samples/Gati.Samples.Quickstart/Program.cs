using Gati.MLNet;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Training;
using Microsoft.ML;

var ml = new MLContext(seed: 0);
// Fashion-MNIST as streaming IDataViews: Image (1x28x28 normalised pixels) and Label (a key).
// Quick-start sizes (about a minute on 2 CPU cores; at this size the accuracy is low and few caches pass calibration):
// the full recipe uses all 60,000 rows, BaseWidth 16-64 and 20 epochs (docs/training.md).
var train = ml.Data.TakeRows(ml.Data.LoadFashionMnist(DatasetSplit.Train), 600);
var test = ml.Data.TakeRows(ml.Data.LoadFashionMnist(DatasetSplit.Test), 200);

// 1. The base model: a CIFAR-style ResNet-18 (the same trainer as ml.MulticlassClassification.Trainers.ResNet).
var trainer = ml.Gati().ResNet(new ResNetTrainer.Options
{
    BaseWidth = 8,                                    // 64 = the paper's width; 8-16 train on a laptop CPU
    Epochs = 3, BatchSize = 32,
    CheckpointPath = "resnet.ckpt", Resume = true,   // atomic checkpoint per epoch, resumable after a kill
    Progress = new Progress<ResNetTrainingProgress>(p =>
    {
        if (p.EpochCompleted) Console.WriteLine($"epoch {p.Epoch}/{p.TotalEpochs}: loss {p.Loss:F3}, train accuracy {p.Accuracy:P1}");
    }),
});
using var model = trainer.Fit(train);                 // adds Score and PredictedLabel
var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
Console.WriteLine($"Base model: {metrics.MicroAccuracy:P1} accuracy on {test.GetRowCount()} test images");

// 2. Learned caches on layers 3, 5 and 7: a predictor and a selector per layer, each exit calibrated to 99.5% precision
//    on held-out rows. Saved with the base model as one ML.NET zip (mlContext.Model.Load reads it back).
using var caches = ml.Gati().LearnedCaches([3, 5, 7], PredictorArchitecture.Conv(),
    new LearnedCachesEstimator.Options { Predictor = new() { Epochs = 3 } }).Fit(model.Transform(train));
var earlyExit = model.Append(caches);                 // one chain: base model, then caches
ml.Gati().SaveModel(earlyExit, train.Schema, "early-exit.zip");

// 3. Real early exit: an input that hits a cache skips the remaining layers.
var images = ml.Data.CreateEnumerable<ImageInput>(test, reuseRowObject: false).ToArray();
using var engine = ml.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(earlyExit);
EarlyExitPrediction answer = engine.Predict(images[0]);
Console.WriteLine($"First test image: {answer.PredictedClass}, exit layer {answer.ExitLayer} (0 = full model), {answer.LatencyMs:F2} ms");

// 4. Which caches are worth keeping on this device, for an agreement target with the base model:
var plan = CacheOptimizer.Choose(CacheMeasurements.Measure(caches, test), new CacheConstraints(MinimumAgreement: 0.99));
Console.WriteLine(plan.Explanation);
