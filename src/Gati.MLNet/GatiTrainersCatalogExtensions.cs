using Gati.MLNet.Models;
using Gati.MLNet.Training;
using Microsoft.ML;

namespace Gati.MLNet;

/// <summary>
/// Gati's trainers in ML.NET's own catalogs, where ML.NET users look for them:
/// <c>mlContext.MulticlassClassification.Trainers.ResNet(...)</c> is the same trainer as <c>mlContext.Gati().ResNet(...)</c>.
/// </summary>
public static class GatiTrainersCatalogExtensions
{
    /// <summary>Trains a CIFAR-style ResNet image classifier (a Gati base model).</summary>
    /// <param name="catalog">The multiclass classification trainers.</param>
    /// <param name="labelColumnName">Key&lt;UInt32&gt; label column.</param>
    /// <param name="imageColumnName">Vector&lt;Single&gt; image column of C*H*W normalised pixels.</param>
    /// <param name="architecture">ResNet depth.</param>
    /// <param name="baseWidth">Channels of the first stage (64 = the paper's; 8-16 for CPU training).</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Images per SGD step.</param>
    /// <param name="learningRate">Initial learning rate (cosine-annealed).</param>
    /// <remarks>
    /// <list type="table">
    /// <listheader><term>column</term><description>type</description></listheader>
    /// <item><term>input: Image</term><description>Vector&lt;Single, C, H, W&gt;</description></item>
    /// <item><term>input: Label</term><description>Key&lt;UInt32, k&gt;</description></item>
    /// <item><term>output: Score</term><description>Vector&lt;Single, k&gt; probabilities, SlotNames</description></item>
    /// <item><term>output: PredictedLabel</term><description>Key&lt;UInt32, k&gt;, KeyValues</description></item>
    /// </list>
    /// <c>mlContext.MulticlassClassification.Evaluate</c> reads these columns.
    /// </remarks>
    public static ResNetTrainer ResNet(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = DefaultColumnNames.Label,
        string imageColumnName = DefaultColumnNames.Image,
        ResNetArchitecture architecture = ResNetArchitecture.ResNet18,
        int baseWidth = 64,
        int epochs = 30,
        int batchSize = 128,
        double learningRate = 0.1) =>
        ResNet(catalog, GatiCatalog.ResNetOptions(labelColumnName, imageColumnName, architecture, baseWidth, epochs, batchSize, learningRate));

    /// <summary>Trains a CIFAR-style ResNet image classifier with full control over the recipe.</summary>
    /// <param name="catalog">The multiclass classification trainers.</param>
    /// <param name="options">Trainer settings.</param>
    public static ResNetTrainer ResNet(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog, ResNetTrainer.Options options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        MLNetVersion.EnsureSupported();
        // ML.NET's catalogs hand their environment to components through this internal interface (docs/mlnet-internals.md).
        return new ResNetTrainer(((Microsoft.ML.Data.IInternalCatalog)catalog).Environment, options);
    }
}
