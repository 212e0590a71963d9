using System.Globalization;
using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(FeatureExtractingTransformer), null, typeof(SignatureLoadModel), "Gati Feature Extractor", FeatureExtractingTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// Hidden-layer features of a frozen base model (a Gati ResNet or an imported network): adds one
/// Vector&lt;Single, C, H, W&gt; column per requested cut point (for a ResNet, a residual block's output), optionally
/// reduced as it is computed (<see cref="FeatureReduction"/>: what Pool and Grid predictors start with), plus the base
/// model's logits and predicted label, the teacher signals of predictor training. Computed in batches; only the cut
/// points a cursor asks for are computed where the base model can stop early.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type</description></listheader>
/// <item><term>input: Image</term><description>Vector&lt;Single, C, H, W&gt; (the base model's input)</description></item>
/// <item><term>output: Layer{n}</term><description>Vector&lt;Single, C_n, H_n, W_n&gt; for each requested cut point n (Layer{n}.grid{g} or
/// Layer{n}.pool{p} when reduced)</description></item>
/// <item><term>output: BaseLogits</term><description>Vector&lt;Single, k&gt; with SlotNames</description></item>
/// <item><term>output: BasePredictedLabel</term><description>Key&lt;UInt32, k&gt; with KeyValues</description></item>
/// </list>
/// Shares the base model (no copy in memory, one copy in a saved chain).
/// </remarks>
public sealed class FeatureExtractingTransformer : GatiTransformerBase, IBaseModelHolder
{
    internal const string LoaderSignature = "GatiFeatureExtractor";

    private readonly BaseModel _base;
    private readonly FeatureRequest[] _requests;
    private readonly Lazy<IFeatureExtraction> _extraction;

    /// <summary>Takes over the caller's hold on <paramref name="baseModel"/>.</summary>
    internal FeatureExtractingTransformer(IHostEnvironment environment, BaseModel baseModel, string imageColumnName, IReadOnlyList<int> layers,
        string layerColumnPrefix, string logitsColumnName, string predictedLabelColumnName, int batchSize, FeatureReduction? reduction = null)
        : this(environment, baseModel, imageColumnName, layers.Select(l => new FeatureRequest(l, reduction ?? FeatureReduction.None)).ToArray(),
            layerColumnPrefix, logitsColumnName, predictedLabelColumnName, batchSize)
    {
    }

    /// <summary>Takes over the caller's hold on <paramref name="baseModel"/>.</summary>
    internal FeatureExtractingTransformer(IHostEnvironment environment, BaseModel baseModel, string imageColumnName, IReadOnlyList<FeatureRequest> features,
        string layerColumnPrefix, string logitsColumnName, string predictedLabelColumnName, int batchSize)
        : base(environment, nameof(FeatureExtractingTransformer))
    {
        _base = baseModel;
        try
        {
            if (features.Count == 0) throw new ArgumentException("Request at least one layer.", nameof(features));
            foreach (var feature in features) baseModel.CutPoint(feature.Cut);
            if (features.Distinct().Count() != features.Count) throw new ArgumentException("Layers must not repeat.", nameof(features));
            if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be positive.");
            _requests = features.ToArray();
            ImageColumnName = imageColumnName;
            LayerColumnPrefix = layerColumnPrefix;
            LogitsColumnName = logitsColumnName;
            PredictedLabelColumnName = predictedLabelColumnName;
            BatchSize = batchSize;
            _extraction = new Lazy<IFeatureExtraction>(() => _base.OpenExtraction(_requests, "auto"), LazyThreadSafetyMode.ExecutionAndPublication);
        }
        catch
        {
            baseModel.Release();
            throw;
        }
    }

    /// <summary>The base network's configuration, for a Gati ResNet base model.</summary>
    /// <exception cref="InvalidOperationException">The base model is an imported network.</exception>
    public ResNetConfig Config => _base is ResNetBaseModel resnet ? resnet.Config
        : throw new InvalidOperationException($"The base model is {_base.Description}, not a Gati ResNet: use BaseModel.");

    /// <summary>The base model the features come from.</summary>
    public BaseModel BaseModel => _base;

    /// <summary>The normalisation of the base model's input images, when known.</summary>
    public ChannelNormalization? InputNormalization => _base.InputNormalization;

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames => _base.ClassNames;

    /// <summary>The image column read.</summary>
    public string ImageColumnName { get; }

    /// <summary>The 1-based layers (cut points) extracted, one entry per output column.</summary>
    public IReadOnlyList<int> Layers => _requests.Select(r => r.Cut).ToArray();

    /// <summary>The reduction of each output column (in the order of <see cref="Layers"/>).</summary>
    public IReadOnlyList<FeatureReduction> Reductions => _requests.Select(r => r.Reduction).ToArray();

    internal IReadOnlyList<FeatureRequest> Requests => _requests;

    /// <summary>Layer columns are named prefix + layer number (+ the reduction's suffix).</summary>
    public string LayerColumnPrefix { get; }

    /// <summary>The base model's logits column.</summary>
    public string LogitsColumnName { get; }

    /// <summary>The base model's predicted-label column.</summary>
    public string PredictedLabelColumnName { get; }

    /// <summary>Rows per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>The column name of layer <paramref name="layer"/>'s features (unreduced).</summary>
    public string LayerColumnName(int layer) => LayerColumnPrefix + layer.ToString(CultureInfo.InvariantCulture);

    /// <summary>The column name of a cut point's features with a reduction.</summary>
    internal string ColumnName(FeatureRequest request) => LayerColumnName(request.Cut) + request.Reduction.Suffix;

    /// <summary>The [C, H, W] of layer <paramref name="layer"/>'s features (unreduced).</summary>
    public TensorShape LayerShape(int layer) => _base.CutPoint(layer).Shape;

    /// <summary>The [C, H, W] of an output column's features.</summary>
    internal TensorShape Shape(FeatureRequest request) => request.Reduction.Apply(LayerShape(request.Cut));

    BaseNetwork IBaseModelHolder.Base => new(_base, ImageColumnName);

    // 1.2: input normalisation; 1.3: any base model, reductions
    private static VersionInfo GetVersionInfo() => ModelStreamVersion("GATIFEAT", 0x00010003, LoaderSignature);

    /// <summary>
    /// Runs the base model on <paramref name="count"/> images and copies out the requested features (null entries are
    /// skipped), logits and predicted keys. The network runs only as deep as the outputs need where it can.
    /// </summary>
    internal void Extract(float[] images, int count, float[]?[] layerOutputs, float[]? logits, uint[]? predicted)
    {
        ThrowIfDisposed();
        _extraction.Value.Extract(images, count, layerOutputs, logits, predicted);
    }

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) => new Mapper(this, inputSchema);

    private protected override VersionInfo ModelVersion => GetVersionInfo();

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        // *** Binary format (docs/model-format.md) ***
        // 1.3: base model block (BaseModelFormat); image column; int32 count + per output: int32 layer, byte reduction kind,
        // int32 reduction size; string prefix, logits column, predicted-label column; int32 batch size
        var writer = ctx.Writer;
        BaseModelFormat.Write(ctx, _base);
        writer.Write(ImageColumnName);
        writer.Write(_requests.Length);
        foreach (var request in _requests)
        {
            writer.Write(request.Cut);
            writer.Write((byte)request.Reduction.Kind);
            writer.Write(request.Reduction.Size);
        }
        writer.Write(LayerColumnPrefix);
        writer.Write(LogitsColumnName);
        writer.Write(PredictedLabelColumnName);
        writer.Write(BatchSize);
    }

    private static FeatureExtractingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var reader = ctx.Reader;
        if (ctx.Header.ModelVerWritten < 0x00010003) return CreateLegacy(env, ctx);
        var model = BaseModelFormat.Read(ctx, env);
        try
        {
            var image = reader.ReadString();
            var count = ModelText.ReadInt(reader, "layer count", 1, 10_000);
            var requests = new FeatureRequest[count];
            for (var i = 0; i < count; i++)
            {
                var layer = ModelText.ReadInt(reader, "layer", 1, 100_000);
                requests[i] = new FeatureRequest(layer, ReadReduction(reader));
            }
            var prefix = reader.ReadString();
            var logits = reader.ReadString();
            var predicted = reader.ReadString();
            var batchSize = ModelText.ReadInt(reader, "batch size", 1, 1 << 20);
            return new FeatureExtractingTransformer(env, model.Acquire(), image, requests, prefix, logits, predicted, batchSize);
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
        }
        finally
        {
            model.Release();
        }
    }

    internal static FeatureReduction ReadReduction(BinaryReader reader)
    {
        var kind = (FeatureReductionKind)reader.ReadByte();
        var size = reader.ReadInt32();
        try
        {
            return kind switch
            {
                FeatureReductionKind.None => FeatureReduction.None,
                FeatureReductionKind.Flat => FeatureReduction.Flat(size),
                FeatureReductionKind.Grid => FeatureReduction.Grid(size),
                _ => throw new InvalidDataException($"Corrupt model: unknown feature reduction {(int)kind}."),
            };
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
        }
    }

    /// <summary>Versions 1.1-1.2: a Gati ResNet's configuration, class names, image column, layers, columns, batch size, weights key.</summary>
    private static FeatureExtractingTransformer CreateLegacy(IHostEnvironment env, ModelLoadContext ctx)
    {
        var reader = ctx.Reader;
        var (config, classNames) = ResNetConfigFormat.ReadWithClassNames(reader);
        var image = reader.ReadString();
        var count = ModelText.ReadInt(reader, "layer count", 1, 1000);
        var layers = new int[count];
        for (var i = 0; i < count; i++) layers[i] = ModelText.ReadInt(reader, "layer", 1, 1000);
        var prefix = reader.ReadString();
        var logits = reader.ReadString();
        var predicted = reader.ReadString();
        var batchSize = ModelText.ReadInt(reader, "batch size", 1, 1 << 20);
        var weights = reader.ReadString();
        var normalization = ctx.Header.ModelVerWritten >= 0x00010002 ? ModelText.ReadNormalization(reader) : null;
        var model = BaseModelFormat.ReadResNet(ctx, env, config, weights, "", classNames, normalization);
        try
        {
            return new FeatureExtractingTransformer(env, model.Acquire(), image, layers, prefix, logits, predicted, batchSize);
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
        }
        finally
        {
            model.Release();
        }
    }

    private protected override void DisposeCore()
    {
        if (_extraction.IsValueCreated) _extraction.Value.Dispose();
        _base.Release();
    }

    private sealed class Mapper : BatchMapper
    {
        private readonly FeatureExtractingTransformer _parent;

        public Mapper(FeatureExtractingTransformer parent, DataViewSchema inputSchema)
            : base(inputSchema, [parent.ImageColumnName], parent.BatchSize)
        {
            _parent = parent;
            CheckInputSize(0, parent._base.InputShape.Size, $"the base model {parent._base.Description} ({parent._base.InputShape} images)");
            var k = parent._base.ClassCount;
            var outputs = new List<OutputColumn>();
            foreach (var request in parent._requests)
            {
                var shape = parent.Shape(request);
                outputs.Add(OutputColumn.Vector(parent.ColumnName(request), shape.Size, dimensions: [shape.Channels, shape.Height, shape.Width]));
            }
            outputs.Add(OutputColumn.Vector(parent.LogitsColumnName, k, Annotations.SlotNames(parent.ClassNames)));
            outputs.Add(OutputColumn.Key(parent.PredictedLabelColumnName, k, Annotations.KeyValues(parent.ClassNames)));
            Outputs = outputs;
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }

        public override void Map(float[][] inputs, int count, Array?[] outputs, bool[] active)
        {
            var layers = _parent._requests.Length;
            var layerOutputs = new float[]?[layers];
            for (var i = 0; i < layers; i++) layerOutputs[i] = (float[]?)outputs[i];
            _parent.Extract(inputs[0], count, layerOutputs, (float[]?)outputs[layers], (uint[]?)outputs[layers + 1]);
        }
    }
}

/// <summary>The estimator of <see cref="FeatureExtractingTransformer"/>: nothing to learn, the base model is frozen.</summary>
public sealed class FeatureExtractingEstimator : IEstimator<FeatureExtractingTransformer>
{
    private readonly IHostEnvironment _environment;
    private readonly ITransformer? _baseModel;
    private readonly Options _options;

    internal FeatureExtractingEstimator(IHostEnvironment environment, ITransformer? baseModel, Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Layers is null || options.Layers.Count == 0) throw new ArgumentException("Request at least one layer.", nameof(options));
        if (baseModel is not null and not IBaseModelHolder)
            throw new ArgumentException($"{baseModel.GetType().Name} is not a Gati base model (a ResNetTransformer or ImportedModelTransformer).", nameof(baseModel));
        _environment = environment;
        _baseModel = baseModel;
        _options = options;
    }

    /// <summary>Settings of feature extraction.</summary>
    public sealed class Options
    {
        /// <summary>1-based layers (cut points) to extract (ResNet-18: 1..8).</summary>
        public IReadOnlyList<int> Layers { get; set; } = [];

        /// <summary>Applied to every layer's features as they are computed (e.g. <c>FeatureReduction.Grid(4)</c> for Grid predictors); none by default.</summary>
        public FeatureReduction Reduction { get; set; } = FeatureReduction.None;

        /// <summary>Layer columns are named prefix + layer number.</summary>
        public string LayerColumnPrefix { get; set; } = "Layer";

        /// <summary>The base model's logits column.</summary>
        public string LogitsColumnName { get; set; } = "BaseLogits";

        /// <summary>The base model's predicted-label column.</summary>
        public string PredictedLabelColumnName { get; set; } = "BasePredictedLabel";

        /// <summary>Rows per forward pass.</summary>
        public int BatchSize { get; set; } = 64;
    }

    /// <summary>Builds the transformer around the base model (given, or found upstream in <paramref name="input"/>).</summary>
    public FeatureExtractingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        GetOutputSchema(SchemaShape.Create(input.Schema));
        var found = _baseModel is IBaseModelHolder holder ? holder.Base : BaseModelLocator.Require(input, "Feature extraction");
        return new FeatureExtractingTransformer(_environment, found.Model.Acquire(), found.ImageColumnName, _options.Layers,
            _options.LayerColumnPrefix, _options.LogitsColumnName, _options.PredictedLabelColumnName, _options.BatchSize, _options.Reduction);
    }

    /// <summary>Checks that the data comes with the base model and its image column; declares the layer, logits and predicted-label columns.</summary>
    /// <exception cref="ArgumentException">No base model precedes this estimator, or its image column is missing or has the wrong type.</exception>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var imageColumn = (_baseModel as IBaseModelHolder)?.Base.ImageColumnName ?? BaseModelLocator.RequireImageColumn(inputSchema, "Feature extraction");
        SchemaShapes.RequireImage(inputSchema, imageColumn, "the base model");
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var layer in _options.Layers)
        {
            var name = _options.LayerColumnPrefix + layer.ToString(CultureInfo.InvariantCulture) + _options.Reduction.Suffix;
            columns[name] = SchemaShapes.VectorColumn(name);
        }
        columns[_options.LogitsColumnName] = SchemaShapes.ScoreColumn(_options.LogitsColumnName);
        columns[_options.PredictedLabelColumnName] = SchemaShapes.KeyColumn(_options.PredictedLabelColumnName);
        return new SchemaShape(columns.Values);
    }
}
