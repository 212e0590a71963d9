using System.Globalization;
using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Torch;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(FeatureExtractingTransformer), null, typeof(SignatureLoadModel), "Gati Feature Extractor", FeatureExtractingTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// Hidden-layer features of a frozen base ResNet: adds one Vector&lt;Single, C, H, W&gt; column per requested layer
/// (a residual block's output, flattened), plus the base model's logits and predicted label, the teacher signals
/// of predictor training. Computed in batches; only the layers a cursor asks for are computed (a cursor reading
/// layer 3 alone runs the network up to block 3).
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type</description></listheader>
/// <item><term>input: Image</term><description>Vector&lt;Single, C, H, W&gt; (the base model's input)</description></item>
/// <item><term>output: Layer{n}</term><description>Vector&lt;Single, C_n, H_n, W_n&gt; for each requested layer n</description></item>
/// <item><term>output: BaseLogits</term><description>Vector&lt;Single, k&gt; with SlotNames</description></item>
/// <item><term>output: BasePredictedLabel</term><description>Key&lt;UInt32, k&gt; with KeyValues</description></item>
/// </list>
/// Shares the base model's network (no copy in memory, one copy in a saved chain).
/// </remarks>
public sealed class FeatureExtractingTransformer : GatiTransformerBase, IBaseModelHolder
{
    internal const string LoaderSignature = "GatiFeatureExtractor";

    private readonly SharedModule<ResNet> _network;
    private readonly string[] _layerColumns;

    internal FeatureExtractingTransformer(IHostEnvironment environment, SharedModule<ResNet> network, IReadOnlyList<string> classNames,
        string imageColumnName, IReadOnlyList<int> layers, string layerColumnPrefix, string logitsColumnName, string predictedLabelColumnName, int batchSize,
        ChannelNormalization? inputNormalization)
        : base(environment, nameof(FeatureExtractingTransformer))
    {
        _network = network;
        InputNormalization = inputNormalization;
        try
        {
            if (layers.Count == 0) throw new ArgumentException("Request at least one layer.", nameof(layers));
            foreach (var layer in layers) network.Module.Spec.CheckLayer(layer, nameof(layers));
            if (layers.Distinct().Count() != layers.Count) throw new ArgumentException("Layers must not repeat.", nameof(layers));
            if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be positive.");
            ClassNames = classNames.ToArray();
            ImageColumnName = imageColumnName;
            Layers = layers.ToArray();
            LayerColumnPrefix = layerColumnPrefix;
            LogitsColumnName = logitsColumnName;
            PredictedLabelColumnName = predictedLabelColumnName;
            BatchSize = batchSize;
            _layerColumns = Layers.Select(LayerColumnName).ToArray();
        }
        catch
        {
            network.Release();
            throw;
        }
    }

    /// <summary>The base network's configuration.</summary>
    public ResNetConfig Config => _network.Module.Config;

    /// <summary>The normalisation of the base model's training images, when known.</summary>
    public ChannelNormalization? InputNormalization { get; }

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>The image column read.</summary>
    public string ImageColumnName { get; }

    /// <summary>The 1-based layers extracted.</summary>
    public IReadOnlyList<int> Layers { get; }

    /// <summary>Layer columns are named prefix + layer number.</summary>
    public string LayerColumnPrefix { get; }

    /// <summary>The base model's logits column.</summary>
    public string LogitsColumnName { get; }

    /// <summary>The base model's predicted-label column.</summary>
    public string PredictedLabelColumnName { get; }

    /// <summary>Rows per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>The device the base network runs on.</summary>
    public string Device => _network.Device.ToString();

    /// <summary>The column name of layer <paramref name="layer"/>'s features.</summary>
    public string LayerColumnName(int layer) => LayerColumnPrefix + layer.ToString(CultureInfo.InvariantCulture);

    /// <summary>The [C, H, W] of layer <paramref name="layer"/>'s features.</summary>
    public TensorShape LayerShape(int layer) => _network.Module.LayerOutputShape(layer);

    BaseNetwork IBaseModelHolder.Base => new(_network, ClassNames, ImageColumnName, InputNormalization);

    private static VersionInfo GetVersionInfo() => new(
        modelSignature: "GATIFEAT",
        verWrittenCur: 0x00010002, // 1.2: input normalisation
        verReadableCur: 0x00010002,
        verWeCanReadBack: 0x00010001,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(FeatureExtractingTransformer).Assembly.FullName);

    /// <summary>
    /// Runs the base network on <paramref name="count"/> images and copies out the requested layers (null entries
    /// are skipped), logits and predicted keys. The network runs only as deep as the outputs need.
    /// </summary>
    internal void Extract(float[] images, int count, float[]?[] layerOutputs, float[]? logits, uint[]? predicted)
    {
        ThrowIfDisposed();
        var network = _network.Module;
        var shape = Config.InputShape;
        var needHead = logits is not null || predicted is not null;
        var depth = needHead ? network.LayerCount : Layers.Where((_, i) => layerOutputs[i] is not null).DefaultIfEmpty(0).Max();
        if (depth == 0) return;
        using (_network.Use())
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var x = tensor(images, shape.WithBatch(images.Length / shape.Size)).narrow(0, 0, count).to(_network.Device);
            var h = network.Stem(x);
            for (var layer = 1; layer <= depth; layer++)
            {
                h = network.Block(layer, h);
                for (var i = 0; i < Layers.Count; i++)
                {
                    if (Layers[i] != layer || layerOutputs[i] is not { } target) continue;
                    var size = LayerShape(layer).Size;
                    TensorOutputs.CopyRows(h.reshape(count, size), target, count, size);
                }
            }
            if (!needHead) return;
            var output = network.Head(h);
            if (logits is not null) TensorOutputs.CopyRows(output, logits, count, Config.ClassCount);
            if (predicted is not null) TensorOutputs.ArgmaxKeys(output, predicted, count);
        }
    }

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) => new Mapper(this, inputSchema);

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        // *** Binary format (docs/model-format.md) ***
        // base config as in GATIRSNT; class names; image column; int32 + int32[] layers; string prefix, logits
        // column, predicted-label column; int32 batch size; string weights key (GatiShared/)
        var writer = ctx.Writer;
        ResNetConfigFormat.Write(writer, Config);
        ModelText.WriteStrings(writer, ClassNames);
        writer.Write(ImageColumnName);
        writer.Write(Layers.Count);
        foreach (var layer in Layers) writer.Write(layer);
        writer.Write(LayerColumnPrefix);
        writer.Write(LogitsColumnName);
        writer.Write(PredictedLabelColumnName);
        writer.Write(BatchSize);
        using (_network.Use())
            writer.Write(SharedWeights.Save(ctx, _network.Module));
        ModelText.WriteNormalization(writer, InputNormalization);
    }

    private static FeatureExtractingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        var config = ResNetConfigFormat.Read(ctx.Reader);
        var classNames = ModelText.ReadStrings(ctx.Reader, "class name", 100_000);
        var image = ctx.Reader.ReadString();
        var count = ModelText.ReadInt(ctx.Reader, "layer count", 1, 1000);
        var layers = new int[count];
        for (var i = 0; i < count; i++) layers[i] = ModelText.ReadInt(ctx.Reader, "layer", 1, 1000);
        var prefix = ctx.Reader.ReadString();
        var logits = ctx.Reader.ReadString();
        var predicted = ctx.Reader.ReadString();
        var batchSize = ModelText.ReadInt(ctx.Reader, "batch size", 1, 1 << 20);
        var weights = ctx.Reader.ReadString();
        var normalization = ctx.Header.ModelVerWritten >= 0x00010002 ? ModelText.ReadNormalization(ctx.Reader) : null;
        TorchRuntime.EnsureInitialized();
        var network = SharedWeights.Load(ctx, weights, () => new ResNet(config), DeviceOptions.ResolveForLoadedModel(env), $"{config.Architecture} base model",
            ResNetConfigFormat.ParameterCount(config));
        network.Module.eval();
        return new FeatureExtractingTransformer(env, network, classNames, image, layers, prefix, logits, predicted, batchSize, normalization);
    }

    private protected override void DisposeCore() => _network.Release();

    private sealed class Mapper : BatchMapper
    {
        private readonly FeatureExtractingTransformer _parent;

        public Mapper(FeatureExtractingTransformer parent, DataViewSchema inputSchema)
            : base(inputSchema, [parent.ImageColumnName], parent.BatchSize)
        {
            _parent = parent;
            CheckInputSize(0, parent.Config.InputShape.Size, $"the base {parent.Config.Architecture} ({parent.Config.InputShape} images)");
            var k = parent.Config.ClassCount;
            var outputs = new List<OutputColumn>();
            foreach (var layer in parent.Layers)
            {
                var shape = parent.LayerShape(layer);
                outputs.Add(OutputColumn.Vector(parent.LayerColumnName(layer), shape.Size, dimensions: [shape.Channels, shape.Height, shape.Width]));
            }
            outputs.Add(OutputColumn.Vector(parent.LogitsColumnName, k, Annotations.SlotNames(parent.ClassNames)));
            outputs.Add(OutputColumn.Key(parent.PredictedLabelColumnName, k, Annotations.KeyValues(parent.ClassNames)));
            Outputs = outputs;
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }

        public override void Map(float[][] inputs, int count, Array?[] outputs, bool[] active)
        {
            var layers = _parent.Layers.Count;
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
    private readonly ResNetTransformer? _baseModel;
    private readonly Options _options;

    internal FeatureExtractingEstimator(IHostEnvironment environment, ResNetTransformer? baseModel, Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Layers is null || options.Layers.Count == 0) throw new ArgumentException("Request at least one layer.", nameof(options));
        _environment = environment;
        _baseModel = baseModel;
        _options = options;
    }

    /// <summary>Settings of feature extraction.</summary>
    public sealed class Options
    {
        /// <summary>1-based layers to extract (ResNet-18: 1..8).</summary>
        public IReadOnlyList<int> Layers { get; set; } = [];

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
        var found = _baseModel is not null ? ((IBaseModelHolder)_baseModel).Base : BaseModelLocator.Require(input, "Feature extraction");
        return new FeatureExtractingTransformer(_environment, found.Network.Acquire(), found.ClassNames, found.ImageColumnName, _options.Layers,
            _options.LayerColumnPrefix, _options.LogitsColumnName, _options.PredictedLabelColumnName, _options.BatchSize, found.InputNormalization);
    }

    /// <summary>Checks that the data comes with the base model and its image column; declares the layer, logits and predicted-label columns.</summary>
    /// <exception cref="ArgumentException">No base model precedes this estimator, or its image column is missing or has the wrong type.</exception>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var imageColumn = _baseModel?.ImageColumnName ?? BaseModelLocator.RequireImageColumn(inputSchema, "Feature extraction");
        SchemaShapes.RequireImage(inputSchema, imageColumn, "the base model");
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var layer in _options.Layers)
        {
            var name = _options.LayerColumnPrefix + layer.ToString(CultureInfo.InvariantCulture);
            columns[name] = SchemaShapes.VectorColumn(name);
        }
        columns[_options.LogitsColumnName] = SchemaShapes.ScoreColumn(_options.LogitsColumnName);
        columns[_options.PredictedLabelColumnName] = SchemaShapes.KeyColumn(_options.PredictedLabelColumnName);
        return new SchemaShape(columns.Values);
    }
}
