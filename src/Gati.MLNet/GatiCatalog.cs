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
        MLNetVersion.EnsureSupported();
        Context = context;
        Environment = context;
    }

    internal MLContext Context { get; }

    internal IHostEnvironment Environment { get; }

    /// <summary>Trains a CIFAR-style ResNet base model (also reachable as <c>mlContext.MulticlassClassification.Trainers.ResNet(...)</c>).</summary>
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
        ResNet(ResNetOptions(labelColumnName, imageColumnName, architecture, baseWidth, epochs, batchSize, learningRate));

    internal static ResNetTrainer.Options ResNetOptions(string labelColumnName, string imageColumnName, ResNetArchitecture architecture,
        int baseWidth, int epochs, int batchSize, double learningRate) => new()
    {
        LabelColumnName = labelColumnName,
        ImageColumnName = imageColumnName,
        Architecture = architecture,
        BaseWidth = baseWidth,
        Epochs = epochs,
        BatchSize = batchSize,
        LearningRate = learningRate,
    };

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
    /// Trains the selector of a predictor on data held out from the predictor's training and calibrates its exit
    /// threshold for a target precision (99.5% by default).
    /// </summary>
    /// <param name="predictor">The fitted predictor whose columns the selector reads.</param>
    /// <param name="options">Settings; the selector uses a copy whose layer and column names come from
    /// <paramref name="predictor"/> (the object passed in is not modified).</param>
    /// <remarks>Inputs: the predictor's Score and PredictedLabel columns, BasePredictedLabel. Outputs: L{n}.ExitProbability
    /// (Single) and L{n}.Exit (Boolean).</remarks>
    public SelectorTrainer Selector(PredictorTransformer predictor, SelectorTrainer.Options? options = null)
    {
        ArgumentNullException.ThrowIfNull(predictor);
        var settings = options?.Clone() ?? new SelectorTrainer.Options();
        settings.Layer = predictor.Layer;
        settings.ScoreColumnName = predictor.ScoreColumnName;
        settings.PredictedLabelColumnName = predictor.PredictedLabelColumnName;
        return Selector(settings);
    }

    /// <summary>Trains a selector with explicit columns and settings.</summary>
    /// <param name="options">Settings.</param>
    public SelectorTrainer Selector(SelectorTrainer.Options options) => new(Environment, options);

    /// <summary>
    /// Learned caches for the base model that precedes this estimator in a pipeline:
    /// <c>resnetEstimator.Append(mlContext.Gati().LearnedCaches([3, 5, 7]))</c>. Fits a predictor and a selector per
    /// layer and calibrates each exit threshold on held-out rows.
    /// </summary>
    /// <param name="layers">Layers that get a cache.</param>
    /// <param name="architecture">Predictor architecture; null keeps <paramref name="options"/>' Architectures (Conv(3, 1) by
    /// default: the cheapest of the reference's three).</param>
    /// <param name="options">Further settings. The estimator uses a copy with <paramref name="layers"/> (and
    /// <paramref name="architecture"/>, when given); the object passed in is not modified.</param>
    /// <remarks>Input: Image. Outputs: EarlyExitScore (Vector&lt;Single, k&gt;), EarlyExitPredictedLabel (Key&lt;UInt32, k&gt;), ExitLayer (Int32, 0 = full model).</remarks>
    public LearnedCachesEstimator LearnedCaches(IReadOnlyList<int> layers, Models.Predictors.PredictorArchitecture? architecture = null,
        LearnedCachesEstimator.Options? options = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        var settings = options?.Clone() ?? new LearnedCachesEstimator.Options();
        settings.Layers = layers.ToArray();
        if (architecture is not null) settings.Architectures = [architecture];
        return new LearnedCachesEstimator(Environment, null, settings);
    }

    /// <summary>Learned caches for a fitted base model, with full control over the settings.</summary>
    /// <param name="baseModel">The fitted base model; null finds it upstream in the pipeline at Fit time.</param>
    /// <param name="options">Settings.</param>
    public LearnedCachesEstimator LearnedCaches(ResNetTransformer? baseModel, LearnedCachesEstimator.Options options) =>
        new(Environment, baseModel, options);

    /// <summary>
    /// An early-exit prediction engine over a model holding learned caches (a <see cref="LearnedCachesTransformer"/>,
    /// or a chain or loaded zip containing one). A model with only a base ResNet gives an engine that always runs
    /// the full model (the baseline).
    /// </summary>
    /// <typeparam name="TInput">Input class with a float[] image member (named like the model's image column).</typeparam>
    /// <typeparam name="TOutput">Output class; <see cref="Inference.EarlyExitPrediction"/> has every supported member.</typeparam>
    /// <param name="model">The model.</param>
    public Inference.EarlyExitPredictionEngine<TInput, TOutput> CreateEarlyExitEngine<TInput, TOutput>(ITransformer model)
        where TInput : class
        where TOutput : class, new() => CreateEarlyExitEngine<TInput, TOutput>(model, new Inference.EarlyExitEngineOptions());

    /// <summary>
    /// Creates an early-exit prediction engine on the runtime and device of <paramref name="options"/> (ONNX Runtime by
    /// default; see <see cref="Inference.ExecutionBackend"/>).
    /// </summary>
    /// <param name="model">A model holding learned caches with one cache per layer (or only a base model: the full model).</param>
    /// <param name="options">Backend, device and threads.</param>
    public Inference.EarlyExitPredictionEngine<TInput, TOutput> CreateEarlyExitEngine<TInput, TOutput>(ITransformer model, Inference.EarlyExitEngineOptions options)
        where TInput : class
        where TOutput : class, new()
    {
        ArgumentNullException.ThrowIfNull(options);
        var (engine, imageColumn) = CreateEngineCore(model, options.Validated());
        try
        {
            return new Inference.EarlyExitPredictionEngine<TInput, TOutput>(engine, imageColumn);
        }
        catch
        {
            engine.Dispose();
            throw;
        }
    }

    internal static (Inference.EarlyExitEngine Engine, string ImageColumn) CreateEngineCore(ITransformer model, Inference.EarlyExitEngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        var components = Flatten(model).ToArray();
        if (components.OfType<LearnedCachesTransformer>().LastOrDefault() is { } caches)
        {
            if (!caches.OneCachePerLayer)
                throw new InvalidOperationException("The model holds several candidate caches on one layer: choose one per layer first (CacheOptimizer.Choose / gati optimize).");
            return (Inference.EarlyExitEngine.Create(caches.BaseNetwork, caches.Caches, caches.ClassNames, caches.InputNormalization, options,
                options.Backend == Inference.ExecutionBackend.OnnxRuntime ? caches.OnnxSegments() : null), caches.ImageColumnName);
        }
        if (components.OfType<ResNetTransformer>().FirstOrDefault() is { } resnet)
        {
            var holder = (IBaseModelHolder)resnet;
            return (Inference.EarlyExitEngine.Create(holder.Base.Network, [], resnet.ClassNames, resnet.InputNormalization, options), resnet.ImageColumnName);
        }
        throw new ArgumentException("The model holds neither learned caches nor a Gati base model.", nameof(model));
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : [model];

    /// <summary>
    /// Writes the base model of <paramref name="model"/> as one standard ONNX graph (opset 17), atomically: input
    /// <c>Image</c> [N, C, H, W] of normalised pixels (as the base model's image column holds them), outputs
    /// <c>Logits</c> and <c>Score</c> (softmax probabilities) [N, k]; batch norms folded into the convolutions. The
    /// class names and the input normalisation are recorded as metadata (docs/model-format.md#onnx-export). ML.NET's
    /// <c>mlContext.Transforms.ApplyOnnxModel</c>, ONNX Runtime and other ONNX tools read it.
    /// </summary>
    /// <param name="model">A Gati base model, or a chain holding one (its caches are not part of this graph).</param>
    /// <param name="path">The .onnx file to write.</param>
    public void ExportOnnx(ITransformer model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var holder = Flatten(model).OfType<IBaseModelHolder>().FirstOrDefault()
            ?? throw new ArgumentException("The model holds no Gati base model to export.", nameof(model));
        var network = holder.Base.Network;
        byte[] bytes;
        using (network.Use()) bytes = Onnx.ResNetOnnx.FullModel(network.Module, Onnx.OnnxMetadata.For(network.Module.Config, holder.Base.ClassNames, holder.Base.InputNormalization));
        ModelFormat.AtomicFile.WriteAllBytes(path, bytes);
    }

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
