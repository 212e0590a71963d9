using Gati.MLNet.Models;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
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
    public FeatureExtractingEstimator ExtractFeatures(ITransformer baseModel, params int[] layers) =>
        ExtractFeatures(baseModel, new FeatureExtractingEstimator.Options { Layers = layers });

    /// <summary>Hidden-layer features of a fitted base model, with full control over column names and batch size.</summary>
    /// <param name="baseModel">The fitted base model; null finds it upstream in the pipeline at Fit time.</param>
    /// <param name="options">Layers and column names.</param>
    public FeatureExtractingEstimator ExtractFeatures(ITransformer? baseModel, FeatureExtractingEstimator.Options options) =>
        new(Environment, baseModel is null ? null : BaseHolder(baseModel, nameof(baseModel)), options);

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
    public LearnedCachesEstimator LearnedCaches(ITransformer? baseModel, LearnedCachesEstimator.Options options) =>
        new(Environment, baseModel is null ? null : BaseHolder(baseModel, nameof(baseModel)), options);

    /// <summary>The base-model transformer of a model (itself, or the one in a chain such as <see cref="ImportBaseModel"/> returns).</summary>
    private static ITransformer BaseHolder(ITransformer model, string parameter) =>
        EarlyExitModel.Find(model)?.BaseTransformer
        ?? throw new ArgumentException($"{model.GetType().Name} holds no Gati base model (a ResNetTransformer or ImportedModelTransformer).", parameter);

    /// <summary>
    /// Makes a fitted ML.NET image-classification pipeline a Gati base model, so that learned caches can be added to it:
    /// the tutorial's LoadImages → ResizeImages → ExtractPixels → a pretrained ONNX featurizer (<c>DnnFeaturizeImage</c>,
    /// e.g. ML.NET's ResNet-18, or <c>ApplyOnnxModel</c>) → a linear multiclass trainer. The featurizer's ONNX graphs and the
    /// trainer's weights (affine normalisers folded in) become one ONNX graph, normalised to Gati's opset with batch norms
    /// folded and cut points found (for a ResNet, each residual block's output). Returns a chain that reads what the
    /// pipeline reads: the transformers that make the pixels (LoadImages, ResizeImages, ExtractPixels), then an
    /// <see cref="ImportedModelTransformer"/> (Score, PredictedLabel) that <c>LearnedCaches</c> finds in the pipeline.
    /// </summary>
    /// <param name="pipeline">The fitted pipeline.</param>
    /// <param name="inputSchema">The schema of the data it was fitted on (e.g. <c>data.Schema</c>).</param>
    /// <param name="options">Cut points, description, batch size.</param>
    /// <remarks>Supported trainers: <see cref="Import.MLNetPipelineImport.SupportedTrainers"/>; others are refused with their name.</remarks>
    public TransformerChain<ITransformer> ImportBaseModel(ITransformer pipeline, DataViewSchema inputSchema, Import.BaseModelImportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        ArgumentNullException.ThrowIfNull(inputSchema);
        options ??= new Import.BaseModelImportOptions();
        var found = Import.MLNetPipelineImport.Analyze(pipeline, inputSchema);
        var network = found.Graphs[^1];
        var graph = OnnxImporter.Import(found.Graphs, ImportedOutput.Features, found.Head, options.CutPoints);
        var description = options.Description ?? $"ONNX featurizer ({graph.Describe()}) + ML.NET {found.TrainerName} head";
        var model = new Models.OnnxBaseModel(graph, graph.ToBytes(), description, found.ClassNames, found.InputNormalization);
        var transformer = new ImportedModelTransformer(Environment, model, found.PixelColumn, batchSize: options.BatchSize);
        return new TransformerChain<ITransformer>([.. found.Prefix, transformer]);
    }

    /// <summary>
    /// Makes an ONNX image classifier a Gati base model: its graph (after an optional preprocessing graph) normalised to
    /// Gati's opset with batch norms folded, a symbolic batch, and cut points found (or named in
    /// <paramref name="options"/>). A graph exported by <see cref="ExportOnnx"/> comes back with its cut points and class
    /// names. Malformed files (truncated protobuf, absurd dimensions, external data outside the model's folder, a cycle,
    /// an unknown operator) are refused with an error naming the file and what is wrong.
    /// </summary>
    /// <param name="modelPath">The .onnx file.</param>
    /// <param name="options">Output, preprocessing graph, cut points, class names, image column.</param>
    public ImportedModelTransformer ImportOnnxModel(string modelPath, Import.OnnxImportOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelPath);
        options ??= new Import.OnnxImportOptions();
        var model = Onnx.OnnxModelFile.Read(modelPath);
        var metadata = model.MetadataProps.GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.Last().Value, StringComparer.Ordinal);
        var output = options.OutputName;
        var scores = options.Scores;
        if (output is null && model.Graph.Output.Count > 1 && model.Graph.Output.Any(o => o.Name == "Logits") && metadata.ContainsKey("gati.format"))
        {
            output = "Logits"; // a Gati export: Logits and Score
            scores = Import.OnnxScores.Logits;
        }
        var name = Path.GetFileName(modelPath);
        var graphs = new List<ImportedGraph>();
        if (options.PreprocessingModelPath is { } pre)
            graphs.Add(new ImportedGraph(Onnx.OnnxModelFile.Read(pre), Path.GetFileName(pre)));
        graphs.Add(new ImportedGraph(model, name, output));
        var graph = OnnxImporter.Import(graphs, scores == Import.OnnxScores.Logits ? ImportedOutput.Logits : ImportedOutput.Probabilities, null, options.CutPoints);
        var classNames = options.ClassNames ?? RecordedClassNames(metadata) ?? Enumerable.Range(0, graph.ClassCount).Select(c => c.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        if (classNames.Count != graph.ClassCount)
            throw new ArgumentException($"{classNames.Count} class names for a model with {graph.ClassCount} scores.", nameof(options));
        var normalization = options.InputNormalization ?? RecordedNormalization(metadata);
        var baseModel = new Models.OnnxBaseModel(graph, graph.ToBytes(), options.Description ?? $"{name} ({graph.Describe()})", classNames, normalization);
        return new ImportedModelTransformer(Environment, baseModel, options.ImageColumnName);
    }

    private static IReadOnlyList<string>? RecordedClassNames(IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue("gati.classNames", out var json)) return null;
        try
        {
            return System.Text.Json.JsonSerializer.Deserialize<string[]>(json);
        }
        catch (System.Text.Json.JsonException)
        {
            return null;
        }
    }

    private static Data.ChannelNormalization? RecordedNormalization(IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue("gati.normalization.mean", out var mean) || !metadata.TryGetValue("gati.normalization.std", out var std)) return null;
        try
        {
            return new Data.ChannelNormalization(System.Text.Json.JsonSerializer.Deserialize<float[]>(mean)!, System.Text.Json.JsonSerializer.Deserialize<float[]>(std)!);
        }
        catch (Exception ex) when (ex is System.Text.Json.JsonException or ArgumentException or NullReferenceException)
        {
            return null;
        }
    }

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
            return new Inference.EarlyExitPredictionEngine<TInput, TOutput>(engine, imageColumn, Prefix(model), Context);
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
        var parts = EarlyExitModel.Find(model) ?? throw new ArgumentException("The model holds neither learned caches nor a Gati base model.", nameof(model));
        if (parts.Caches is { } caches)
        {
            if (!caches.OneCachePerLayer)
                throw new InvalidOperationException("The model holds several candidate caches on one layer: choose one per layer first (CacheOptimizer.Choose / gati optimize).");
            return (Inference.EarlyExitEngine.Create(caches.BaseModel, caches.Caches, options), caches.ImageColumnName);
        }
        return (Inference.EarlyExitEngine.Create(parts.BaseModel, [], options), parts.ImageColumnName);
    }

    /// <summary>The transformers of a model before its base model (which make the base model's input column), or null.</summary>
    internal static ITransformer? Prefix(ITransformer model) => EarlyExitModel.Find(model)?.PrefixChain;

    /// <summary>
    /// Writes the base model of <paramref name="model"/> as one standard ONNX graph (opset 17), atomically: input
    /// <c>Image</c> [N, C, H, W] (as the base model's image column holds it), outputs <c>Logits</c> and <c>Score</c>
    /// (softmax probabilities) [N, k]; batch norms folded into the convolutions. The class names, the input
    /// normalisation and the cut points are recorded as metadata (docs/model-format.md#onnx-export), so
    /// <see cref="ImportOnnxModel"/> reads it back with the same cut points. ML.NET's <c>mlContext.Transforms.ApplyOnnxModel</c>,
    /// ONNX Runtime and other ONNX tools read it.
    /// </summary>
    /// <param name="model">A Gati base model, or a chain holding one (its caches are not part of this graph).</param>
    /// <param name="path">The .onnx file to write.</param>
    public void ExportOnnx(ITransformer model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var baseModel = EarlyExitModel.Find(model)?.BaseModel
            ?? throw new ArgumentException("The model holds no Gati base model to export.", nameof(model));
        ModelFormat.AtomicFile.WriteAllBytes(path, baseModel.Graph.FullModel(OnnxMetadata.For(baseModel)));
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
