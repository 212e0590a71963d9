using System.Globalization;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Policy;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Gati.MLNet.Training;

/// <summary>
/// Fits learned caches — a predictor and a selector per layer — for a base ResNet, and composes after the base
/// model's estimator: <c>resnetEstimator.Append(mlContext.Gati().LearnedCaches(layers, architecture, options))</c>.
/// The training data is split by rows: the last held-out rows never train a predictor; half of them train the
/// selectors (and pick each predictor's best epoch), the other half calibrate each exit threshold to the target
/// precision. Create it with <see cref="GatiCatalog.LearnedCaches(IReadOnlyList{int}, PredictorArchitecture?, LearnedCachesEstimator.Options?)"/>.
/// </summary>
/// <remarks>
/// Input: the base model's image column (and the rows it was trained on, or any labelled-or-not images).
/// Output: a <see cref="LearnedCachesTransformer"/>: EarlyExitScore, EarlyExitPredictedLabel, ExitLayer.
/// </remarks>
public sealed class LearnedCachesEstimator : IEstimator<LearnedCachesTransformer>
{
    private readonly IHost _host;
    private readonly IBaseModelHolder? _baseModel;
    private readonly Options _options;

    internal LearnedCachesEstimator(IHostEnvironment environment, ITransformer? baseModel, Options options)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(options);
        if (baseModel is not null and not IBaseModelHolder)
            throw new ArgumentException($"{baseModel.GetType().Name} is not a Gati base model (a ResNetTransformer or ImportedModelTransformer).", nameof(baseModel));
        options.Validate();
        _host = environment.Register(nameof(LearnedCachesEstimator));
        _baseModel = (IBaseModelHolder?)baseModel;
        _options = options;
    }

    /// <summary>Predictor recipe for learned caches (distillation; see <see cref="PredictorTrainingOptions"/>).</summary>
    public sealed class PredictorOptions : PredictorTrainingOptions
    {
    }

    /// <summary>The settings this estimator uses (its own copy where the catalog filled some in).</summary>
    internal Options Settings => _options;

    /// <summary>Settings of learned caches.</summary>
    public sealed class Options
    {
        /// <summary>Layers that get a cache.</summary>
        public IReadOnlyList<int> Layers { get; set; } = [];

        /// <summary>Predictor architectures; with several, every layer gets one candidate cache per architecture
        /// (choose among them with <see cref="CacheOptimizer"/>).</summary>
        public IReadOnlyList<PredictorArchitecture> Architectures { get; set; } = [PredictorArchitecture.Conv()];

        /// <summary>Already trained predictors to use instead of training new ones (e.g. from gati train-predictors).</summary>
        public IReadOnlyList<PredictorTransformer>? Predictors { get; set; }

        /// <summary>Predictor recipe (ValidationSet and Device are set by the estimator).</summary>
        public PredictorOptions Predictor { get; set; } = new() { Epochs = 20, Patience = 5 };

        /// <summary>Selector network, target precision and recipe.</summary>
        public SelectorTrainingSettings Selector { get; set; } = new();

        /// <summary>Held-out rows (the last ones of the data); null = <see cref="HeldOutFraction"/> of the rows.</summary>
        public long? HeldOutRows { get; set; }

        /// <summary>Share of the rows held out when <see cref="HeldOutRows"/> is null.</summary>
        public double HeldOutFraction { get; set; } = 0.1;

        /// <summary>Separate held-out data; then every input row trains predictors.</summary>
        public IDataView? HeldOutSet { get; set; }

        /// <summary>Share of the held-out rows (the last ones) that calibrate thresholds; the rest train selectors.</summary>
        public double CalibrationFraction { get; set; } = 0.5;

        /// <summary>Dump training features here (resumable) instead of streaming them from the base model every epoch.</summary>
        public string? FeatureDumpDirectory { get; set; }

        /// <summary>auto, cpu, cuda or cuda:N.</summary>
        public string Device { get; set; } = DeviceOptions.Auto;

        /// <summary>Seed; null uses the MLContext's seed, else 0.</summary>
        public int? Seed { get; set; }

        /// <summary>Rows per engine call when the fitted transformer scores data.</summary>
        public int InferenceBatchSize { get; set; } = 64;

        /// <summary>Status messages (phases, per-cache results).</summary>
        public IProgress<string>? Status { get; set; }

        /// <summary>A copy (lists and nested settings are shared, never modified): the catalog fills in its copy, not the caller's.</summary>
        internal Options Clone() => (Options)MemberwiseClone();

        internal void Validate()
        {
            if (Predictors is null && (Layers is null || Layers.Count == 0)) throw new ArgumentException("Name at least one layer.", nameof(Layers));
            if (Predictors is null && (Architectures is null || Architectures.Count == 0)) throw new ArgumentException("Name at least one predictor architecture.", nameof(Architectures));
            if (Layers is not null && Layers.Distinct().Count() != Layers.Count) throw new ArgumentException("Layers must not repeat.", nameof(Layers));
            ArgumentNullException.ThrowIfNull(Predictor);
            Predictor.ValidateCommon();
            ArgumentNullException.ThrowIfNull(Selector);
            Selector.Validate();
            if (HeldOutRows is < 2) throw new ArgumentOutOfRangeException(nameof(HeldOutRows), HeldOutRows, "At least 2 held-out rows.");
            if (HeldOutFraction is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(HeldOutFraction), HeldOutFraction, "Must be in (0, 1).");
            if (CalibrationFraction is <= 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(CalibrationFraction), CalibrationFraction, "Must be in (0, 1).");
            if (InferenceBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(InferenceBatchSize), InferenceBatchSize, "Must be positive.");
            DeviceOptions.Validate(Device, nameof(Device));
        }
    }

    /// <summary>Fits predictors (unless given) and selectors, and calibrates every exit threshold.</summary>
    /// <exception cref="ArgumentException">The data lacks the base model or its image column, or has too few rows to split.</exception>
    public LearnedCachesTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        GetOutputSchema(SchemaShape.Create(input.Schema));
        TorchRuntime.EnsureInitialized();
        var options = _options;
        var baseNetwork = _baseModel is not null ? _baseModel.Base : BaseModelLocator.Require(input, "Learned caches");
        var baseModel = baseNetwork.Model;
        var seed = options.Seed ?? (_host as IHostEnvironmentInternal)?.Seed ?? 0;
        var context = new MLContext(seed);

        IDataView training, heldOut;
        if (options.HeldOutSet is { } given)
        {
            training = input;
            heldOut = given;
        }
        else
        {
            var rows = input.GetRowCount() ?? CountRows(input);
            var held = options.HeldOutRows ?? (long)Math.Round(rows * options.HeldOutFraction);
            if (held < 2 || held >= rows) throw new ArgumentException($"Cannot hold out {held} of {rows} rows.", nameof(input));
            training = context.Data.TakeRows(input, rows - held);
            heldOut = context.Data.SkipRows(input, rows - held);
        }
        var heldOutRows = heldOut.GetRowCount() ?? CountRows(heldOut);
        var selectorRows = (long)Math.Round(heldOutRows * (1 - options.CalibrationFraction));
        if (selectorRows < 1 || selectorRows >= heldOutRows) throw new ArgumentException($"{heldOutRows} held-out rows are too few to split between selectors and calibration.", nameof(input));
        var selectorSet = context.Data.TakeRows(heldOut, selectorRows);
        var calibrationSet = context.Data.SkipRows(heldOut, selectorRows);

        // Each cut point's features as every predictor on it reads them: reduced where its architecture starts with a
        // parameter-free pooling (Pool, Grid), so that 224 x 224 feature maps are extracted and stored small.
        var specs = options.Predictors is { } trained
            ? trained.Select(p => new PredictorSpec(p.Layer, p.Architecture, p.FeatureColumnName, p.ScoreColumnName, p.PredictedLabelColumnName)).ToArray()
            : options.Layers.Order().SelectMany(l => options.Architectures.Select(a => Spec(baseModel, l, a))).ToArray();
        var requests = specs.Select(s => FeatureColumns.Parse(s.Feature, "Layer", baseModel)).Distinct().ToArray();
        using var extractor = new FeatureExtractingTransformer(_host, baseModel.Acquire(), baseNetwork.ImageColumnName, requests, "Layer", "BaseLogits",
            "BasePredictedLabel", options.InferenceBatchSize);

        var predictors = options.Predictors?.ToList() ?? TrainPredictors(training, selectorSet, extractor, specs, seed);
        var ownPredictors = options.Predictors is null;
        try
        {
            options.Status?.Report($"Training {predictors.Count} selectors on {selectorRows} held-out rows and calibrating on {heldOutRows - selectorRows} rows ({options.Selector.Describe()}).");
            var chain = new TransformerChain<ITransformer>([extractor, .. predictors]);
            var columns = predictors.Select(p => (p.ScoreColumnName, p.PredictedLabelColumnName)).ToArray();
            var classes = baseModel.ClassCount;
            var trainOutputs = PredictorOutputs.ReadMany(chain.Transform(selectorSet), columns, "BasePredictedLabel", classes);
            var calibrationOutputs = PredictorOutputs.ReadMany(chain.Transform(calibrationSet), columns, "BasePredictedLabel", classes);
            var device = DeviceOptions.Resolve(options.Device, _host);
            var caches = new List<LearnedCache>();
            try
            {
                for (var i = 0; i < predictors.Count; i++)
                {
                    var selector = SelectorTraining.Train(trainOutputs[i].LogProbabilities, trainOutputs[i].Correct, classes, options.Selector, seed + i, device);
                    var probabilities = SelectorTraining.HitProbabilities(selector, calibrationOutputs[i].LogProbabilities, classes, device);
                    var calibration = ExitCalibration.Calibrate(probabilities, calibrationOutputs[i].Correct, options.Selector.TargetPrecision, options.Selector.MinimumHits);
                    caches.Add(CacheFor(baseModel, predictors[i], new SharedModule<SelectorNetwork>(selector, device), calibration));
                    options.Status?.Report(caches[^1].ToString());
                }
                return new LearnedCachesTransformer(_host, baseModel.Acquire(), baseNetwork.ImageColumnName, caches, new LearnedCachesTransformer.Columns(),
                    options.InferenceBatchSize);
            }
            catch
            {
                foreach (var cache in caches) cache.Dispose();
                throw;
            }
        }
        finally
        {
            if (ownPredictors)
                foreach (var predictor in predictors) predictor.Dispose();
        }
    }

    /// <summary>The predictor of a layer and architecture, reading reduced features where its architecture allows.</summary>
    private static PredictorSpec Spec(Models.BaseModel baseModel, int layer, PredictorArchitecture architecture)
    {
        var shape = baseModel.CutPoint(layer).Shape;
        var reduction = architecture.Reduction.Reduces(shape) ? architecture.Reduction : Models.FeatureReduction.None;
        return new PredictorSpec(layer, architecture, "Layer" + layer.ToString(CultureInfo.InvariantCulture) + reduction.Suffix);
    }

    /// <summary>A cache from a trained predictor (bound to its cut point's full features) and a selector (taken over).</summary>
    internal static LearnedCache CacheFor(Models.BaseModel baseModel, PredictorTransformer predictor, SharedModule<SelectorNetwork> selector, ExitCalibration calibration)
    {
        var shape = baseModel.CutPoint(predictor.Layer).Shape;
        SharedModule<PredictorNetwork> network;
        lock (predictor.Gate)
        {
            var bound = predictor.Network.For(shape);
            network = ReferenceEquals(bound, predictor.Network) ? predictor.AcquireNetwork() : new SharedModule<PredictorNetwork>(bound, predictor.DeviceInfo);
        }
        return new LearnedCache(predictor.Layer, shape, network, selector, calibration, predictor.Summary);
    }

    private List<PredictorTransformer> TrainPredictors(IDataView training, IDataView validation, FeatureExtractingTransformer extractor, PredictorSpec[] specs, int seed)
    {
        var options = _options;
        IDataView features;
        if (options.FeatureDumpDirectory is { } dump)
        {
            options.Status?.Report($"Dumping features of layers {string.Join(",", extractor.Layers.Distinct())} to {dump}.");
            FeatureDump.Write(extractor, training, dump, new FeatureDumpOptions { Source = "learned-cache training rows" });
            features = new MLContext(seed).Data.LoadFeatureDump(dump, extractor.Layers.Distinct().ToArray());
        }
        else
        {
            features = extractor.Transform(training);
        }
        options.Status?.Report($"Training {specs.Length} predictors ({(options.FeatureDumpDirectory is null ? "streaming features from the base model" : "from the feature dump")}).");
        // The recipe is copied whole (a new predictor option needs no edit here); what this estimator owns overrides it.
        var trainerOptions = options.Predictor.CopySettingsTo(new PredictorSetTrainer.Options { Predictors = specs });
        trainerOptions.KnownBaseNetwork = ((IBaseModelHolder)extractor).Base;
        trainerOptions.Seed = seed;
        trainerOptions.Device = options.Device;
        trainerOptions.ValidationSet = extractor.Transform(validation);
        var trainer = new PredictorSetTrainer(_host, trainerOptions);
        return trainer.Fit(features).Cast<PredictorTransformer>().ToList();
    }

    private static long CountRows(IDataView data)
    {
        long rows = 0;
        using var cursor = data.GetRowCursor([]);
        while (cursor.MoveNext()) rows++;
        return rows;
    }

    /// <summary>
    /// Checks that the data comes with the base model (given, or a Gati ResNet earlier in the pipeline) and holds its
    /// image column, then declares the early-exit output columns. A pipeline that cannot work fails here, before any
    /// estimator in it trains.
    /// </summary>
    /// <exception cref="ArgumentException">No base model precedes this estimator, or its image column is missing or not a known-size Vector&lt;Single&gt;.</exception>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var imageColumn = _baseModel?.Base.ImageColumnName ?? BaseModelLocator.RequireImageColumn(inputSchema, "Learned caches");
        SchemaShapes.RequireImage(inputSchema, imageColumn, "the base model");
        var names = new LearnedCachesTransformer.Columns();
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[names.Score] = SchemaShapes.ScoreColumn(names.Score);
        columns[names.PredictedLabel] = SchemaShapes.KeyColumn(names.PredictedLabel);
        columns[names.ExitLayer] = SchemaShapes.ScalarColumn(names.ExitLayer, NumberDataViewType.Int32);
        return new SchemaShape(columns.Values);
    }
}
