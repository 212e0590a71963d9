using Gati.MLNet.Models;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace Gati.MLNet;

/// <summary>
/// Entry point to Gati.MLNet's ML.NET components: <c>mlContext.Gati()</c>. Components are created only
/// through these methods, each with a simple overload and an Options overload.
/// </summary>
public sealed class GatiCatalog
{
    internal GatiCatalog(MLContext context)
    {
        Context = context;
        Environment = context;
    }

    internal MLContext Context { get; }

    internal IHostEnvironment Environment { get; }

    /// <summary>Trains a CIFAR-style ResNet base model.</summary>
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
    /// </remarks>
    public ResNetTrainer ResNet(
        string labelColumnName = DefaultColumnNames.Label,
        string imageColumnName = DefaultColumnNames.Image,
        ResNetArchitecture architecture = ResNetArchitecture.ResNet18,
        int baseWidth = 64,
        int epochs = 30,
        int batchSize = 128,
        double learningRate = 0.1) =>
        ResNet(new ResNetTrainer.Options
        {
            LabelColumnName = labelColumnName,
            ImageColumnName = imageColumnName,
            Architecture = architecture,
            BaseWidth = baseWidth,
            Epochs = epochs,
            BatchSize = batchSize,
            LearningRate = learningRate,
        });

    /// <summary>Trains a CIFAR-style ResNet base model with full control over the recipe.</summary>
    /// <param name="options">Trainer settings.</param>
    public ResNetTrainer ResNet(ResNetTrainer.Options options) => new(Environment, options);

    /// <summary>
    /// Hidden-layer features of a fitted base model: one column per layer plus the base model's logits and
    /// predicted label (the teacher signals for predictors).
    /// </summary>
    /// <param name="baseModel">The fitted base model (its network is shared, not copied).</param>
    /// <param name="layers">1-based layers (residual block outputs), e.g. 1..8 for ResNet-18.</param>
    /// <remarks>
    /// <list type="table">
    /// <listheader><term>column</term><description>type</description></listheader>
    /// <item><term>input: Image</term><description>Vector&lt;Single, C, H, W&gt;</description></item>
    /// <item><term>output: Layer{n}</term><description>Vector&lt;Single, C_n, H_n, W_n&gt;</description></item>
    /// <item><term>output: BaseLogits</term><description>Vector&lt;Single, k&gt;</description></item>
    /// <item><term>output: BasePredictedLabel</term><description>Key&lt;UInt32, k&gt;</description></item>
    /// </list>
    /// </remarks>
    public FeatureExtractingEstimator ExtractFeatures(ResNetTransformer baseModel, params int[] layers) =>
        ExtractFeatures(baseModel, new FeatureExtractingEstimator.Options { Layers = layers });

    /// <summary>Hidden-layer features of a fitted base model, with full control over column names and batch size.</summary>
    /// <param name="baseModel">The fitted base model; null finds it upstream in the pipeline at Fit time.</param>
    /// <param name="options">Layers and column names.</param>
    public FeatureExtractingEstimator ExtractFeatures(ResNetTransformer? baseModel, FeatureExtractingEstimator.Options options) =>
        new(Environment, baseModel, options);

    /// <summary>
    /// Hidden-layer features of the base model that precedes this estimator in a pipeline
    /// (<c>resnetEstimator.Append(mlContext.Gati().ExtractFeatures(1, 2, 3))</c>).
    /// </summary>
    /// <param name="layers">1-based layers.</param>
    public FeatureExtractingEstimator ExtractFeatures(params int[] layers) =>
        ExtractFeatures(null, new FeatureExtractingEstimator.Options { Layers = layers });

    /// <summary>Trains a predictor on one hidden layer by distillation from the base model.</summary>
    /// <param name="layer">The 1-based layer whose features (column Layer{n}) it reads.</param>
    /// <param name="architecture">FC(1024) by default; Pool(4096, 1024) and Conv(3, 1) are the reference's others.</param>
    /// <param name="validationSet">Held-out features for agreement per epoch (keeps the best epoch, stops early).</param>
    /// <remarks>Inputs: Layer{n}, BaseLogits, BasePredictedLabel (from ExtractFeatures). Outputs: L{n}.{arch}.Score
    /// (log-probabilities) and L{n}.{arch}.PredictedLabel.</remarks>
    public PredictorTrainer Predictor(int layer, Models.Predictors.PredictorArchitecture? architecture = null, IDataView? validationSet = null) =>
        Predictor(new PredictorTrainer.Options
        {
            Layer = layer,
            Architecture = architecture ?? Models.Predictors.PredictorArchitecture.FC(),
            ValidationSet = validationSet,
        });

    /// <summary>Trains a predictor with full control over the recipe and columns.</summary>
    /// <param name="options">Settings.</param>
    public PredictorTrainer Predictor(PredictorTrainer.Options options) => new(Environment, options);

    /// <summary>Trains several predictors (layers x architectures) together, one pass over the data per epoch.</summary>
    /// <param name="options">The predictors and their shared recipe.</param>
    public PredictorSetTrainer Predictors(PredictorSetTrainer.Options options) => new(Environment, options);

    /// <summary>
    /// Saves a model zip atomically (temporary file, flush, rename): a crash never leaves a torn model behind.
    /// The zip is a plain ML.NET model that <c>mlContext.Model.Load</c> reads.
    /// </summary>
    /// <param name="model">The fitted transformer or chain.</param>
    /// <param name="inputSchema">The schema of the data the model reads (saved with it).</param>
    /// <param name="path">Destination file.</param>
    public void SaveModel(ITransformer model, DataViewSchema? inputSchema, string path) =>
        ModelFormat.ModelFiles.Save(Context, model, inputSchema, path);

    /// <summary>
    /// Loads a model zip, checking the container first so that a missing, truncated or corrupt file fails with
    /// a message naming the file and the problem.
    /// </summary>
    /// <param name="path">The model zip.</param>
    /// <param name="inputSchema">The schema saved with the model.</param>
    public ITransformer LoadModel(string path, out DataViewSchema inputSchema) =>
        ModelFormat.ModelFiles.Load(Context, path, out inputSchema);
}

/// <summary>Adds <c>mlContext.Gati()</c>.</summary>
public static class GatiCatalogExtensions
{
    /// <summary>The catalog of Gati.MLNet components for this context.</summary>
    public static GatiCatalog Gati(this MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        return new GatiCatalog(mlContext);
    }
}
