using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Gati.MLNet.Training;

/// <summary>
/// Trains one predictor (a learned cache's prediction network) on one hidden layer by distillation from the base
/// model. Create it with <see cref="GatiCatalog.Predictor(PredictorTrainer.Options)"/>.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type</description></listheader>
/// <item><term>input: Layer{n}</term><description>Vector&lt;Single&gt; features (ExtractFeatures, or a feature dump)</description></item>
/// <item><term>input: BaseLogits</term><description>Vector&lt;Single, k&gt;, the teacher</description></item>
/// <item><term>input: BasePredictedLabel</term><description>Key&lt;UInt32, k&gt;, the hard target</description></item>
/// <item><term>output: L{n}.{arch}.Score</term><description>Vector&lt;Single, k&gt; log-probabilities</description></item>
/// <item><term>output: L{n}.{arch}.PredictedLabel</term><description>Key&lt;UInt32, k&gt;</description></item>
/// </list>
/// </remarks>
public sealed class PredictorTrainer : IEstimator<PredictorTransformer>
{
    private readonly IHost _host;
    private readonly Options _options;

    internal PredictorTrainer(IHostEnvironment environment, Options options)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(options);
        options.ValidateCommon();
        if (options.Layer < 1) throw new ArgumentOutOfRangeException(nameof(options), options.Layer, "Layer must be 1 or more.");
        ArgumentNullException.ThrowIfNull(options.Architecture);
        _host = environment.Register(nameof(PredictorTrainer));
        _options = options;
    }

    /// <summary>Settings of a single predictor.</summary>
    public sealed class Options : PredictorTrainingOptions
    {
        /// <summary>The 1-based layer read.</summary>
        public int Layer { get; set; }

        /// <summary>FC(1024), Pool(4096, 1024), Conv(3, 1), ...</summary>
        public PredictorArchitecture Architecture { get; set; } = PredictorArchitecture.FC();

        /// <summary>The feature column; null = Layer{n}.</summary>
        public string? FeatureColumnName { get; set; }

        /// <summary>The output log-probabilities column; null = L{n}.{arch}.Score.</summary>
        public string? ScoreColumnName { get; set; }

        /// <summary>The output predicted-class column; null = L{n}.{arch}.PredictedLabel.</summary>
        public string? PredictedLabelColumnName { get; set; }

        internal PredictorSpec Spec => new(Layer, Architecture, FeatureColumnName, ScoreColumnName, PredictedLabelColumnName);
    }

    /// <summary>Trains the predictor (its held-out figures: <see cref="PredictorTransformer.Summary"/>). The trainer is left unchanged.</summary>
    public PredictorTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        GetOutputSchema(SchemaShape.Create(input.Schema));
        return PredictorTraining.Run(_host, input, _options, [_options.Spec])[0];
    }

    /// <summary>Declares the score and predicted-label columns.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema) => PredictorSetTrainer.OutputSchema(inputSchema, [_options.Spec], _options);
}

/// <summary>
/// Trains several predictors (layers x architectures) in one pass per epoch over the data: the way to produce a
/// whole agreement table. The fitted chain applies them all. Create it with
/// <see cref="GatiCatalog.Predictors(PredictorSetTrainer.Options)"/>.
/// </summary>
public sealed class PredictorSetTrainer : IEstimator<TransformerChain<PredictorTransformer>>
{
    private readonly IHost _host;
    private readonly Options _options;

    internal PredictorSetTrainer(IHostEnvironment environment, Options options)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(options);
        options.ValidateCommon();
        if (options.Predictors.Count == 0) throw new ArgumentException("Name at least one predictor.", nameof(options));
        _host = environment.Register(nameof(PredictorSetTrainer));
        _options = options;
    }

    /// <summary>Settings: the predictors and their shared recipe.</summary>
    public sealed class Options : PredictorTrainingOptions
    {
        /// <summary>The predictors to train.</summary>
        public IReadOnlyList<PredictorSpec> Predictors { get; set; } = [];
    }

    /// <summary>Trains every predictor; the result applies them in order.</summary>
    public TransformerChain<PredictorTransformer> Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new TransformerChain<PredictorTransformer>(PredictorTraining.Run(_host, input, _options, _options.Predictors).ToArray());
    }

    /// <summary>Declares every predictor's score and predicted-label columns.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema) => OutputSchema(inputSchema, _options.Predictors, _options);

    internal static SchemaShape OutputSchema(SchemaShape inputSchema, IEnumerable<PredictorSpec> specs, PredictorTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        foreach (var name in new[] { options.TeacherLogitsColumnName, options.TeacherLabelColumnName })
            if (!inputSchema.TryFindColumn(name, out _))
                throw new ArgumentException($"Column '{name}' not found: predictors train on the output of ExtractFeatures (or a feature dump).");
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var spec in specs)
        {
            if (!inputSchema.TryFindColumn(spec.Feature, out _))
                throw new ArgumentException($"Feature column '{spec.Feature}' not found: extract layer {spec.Layer} first.");
            columns[spec.Score] = SchemaShapes.ScoreColumn(spec.Score);
            columns[spec.Predicted] = SchemaShapes.KeyColumn(spec.Predicted);
        }
        return new SchemaShape(columns.Values);
    }
}
