using System.Globalization;
using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Torch;
using static TorchSharp.torch;

namespace Gati.MLNet.Models;

/// <summary>
/// A CIFAR-style ResNet trained by Gati as a base model: cut point n is the output of residual block n (the numbering
/// of layers throughout Gati), its ONNX graph is exported from the TorchSharp weights (or read from the zip that stored
/// it), and features for training come from the TorchSharp network on its device.
/// </summary>
internal sealed class ResNetBaseModel : BaseModel
{
    private readonly SharedModule<ResNet> _network;
    private readonly object _graphGate = new();
    private byte[]? _graphBytes;
    private BaseGraph? _graph;
    private readonly CutPoint[] _cuts;

    /// <param name="config">The architecture (known without building the network).</param>
    /// <param name="network">The network (this model takes over the caller's hold on it).</param>
    /// <param name="classNames">Class names.</param>
    /// <param name="inputNormalization">The training images' normalisation, when known.</param>
    /// <param name="graphBytes">The stored graph, when the zip holds it (otherwise exported from the weights on first use).</param>
    public ResNetBaseModel(ResNetConfig config, SharedModule<ResNet> network, IReadOnlyList<string> classNames, ChannelNormalization? inputNormalization,
        byte[]? graphBytes = null)
        : base(classNames, inputNormalization)
    {
        if (classNames.Count != config.ClassCount)
            throw new ArgumentException($"{classNames.Count} class names for a {config.ClassCount}-class network.", nameof(classNames));
        Config = config;
        Spec = ResNetSpec.For(config.Architecture);
        _network = network;
        _graphBytes = graphBytes;
        _cuts = Enumerable.Range(1, Spec.LayerCount)
            .Select(layer => new CutPoint(layer, ResNetOnnx.CutName(layer), Spec.LayerOutputShape(layer, config.InputShape, config.BaseWidth))).ToArray();
    }

    public ResNetConfig Config { get; }

    public ResNetSpec Spec { get; }

    /// <summary>The TorchSharp network (built on first use when loaded from a zip).</summary>
    public SharedModule<ResNet> Network => _network;

    public override string Description =>
        string.Create(CultureInfo.InvariantCulture, $"{Config.Architecture} (width {Config.BaseWidth}, {Config.InputShape} input)");

    public override TensorShape InputShape => Config.InputShape;

    public override IReadOnlyList<CutPoint> CutPoints => _cuts;

    public override long ParameterCount => ResNetConfigFormat.ParameterCount(Config);

    internal override BaseGraph Graph
    {
        get
        {
            lock (_graphGate)
            {
                if (_graph is not null) return _graph;
                _graph = BaseGraph.FromBytes(GraphBytesLocked(), $"{Config.Architecture} base graph");
                return _graph;
            }
        }
    }

    internal override byte[] GraphBytes
    {
        get
        {
            lock (_graphGate) return GraphBytesLocked();
        }
    }

    private byte[] GraphBytesLocked()
    {
        if (_graphBytes is not null) return _graphBytes;
        using (_network.Use())
            _graphBytes = ResNetOnnx.BaseGraphModel(_network.Module, OnnxMetadata.For(Config, ClassNames, InputNormalization));
        return _graphBytes;
    }

    /// <summary>Whether the graph exists without exporting it from the weights (stored in the zip, or exported already).</summary>
    internal bool HasGraph
    {
        get
        {
            lock (_graphGate) return _graphBytes is not null;
        }
    }

    internal override (float[] Weight, float[] Bias)? LinearHead
    {
        get
        {
            using (_network.Use())
            using (NewDisposeScope())
            using (no_grad())
            {
                var head = _network.Module.HeadLinear;
                return (head.weight!.detach().cpu().contiguous().data<float>().ToArray(), head.bias!.detach().cpu().data<float>().ToArray());
            }
        }
    }

    internal override IFeatureExtraction OpenExtraction(IReadOnlyList<FeatureRequest> requests, string device) => new Extraction(this, requests);

    private protected override void DisposeCore() => _network.Release();

    /// <summary>The TorchSharp network block by block, as deep as the requested outputs need.</summary>
    private sealed class Extraction : IFeatureExtraction
    {
        private readonly ResNetBaseModel _model;
        private readonly FeatureRequest[] _requests;
        private readonly TensorShape[] _shapes;

        public Extraction(ResNetBaseModel model, IReadOnlyList<FeatureRequest> requests)
        {
            _model = model;
            _requests = requests.ToArray();
            _shapes = _requests.Select(r => model.CutPoint(r.Cut).Shape).ToArray();
            Sizes = _requests.Select((r, i) => r.Reduction.Apply(_shapes[i]).Size).ToArray();
        }

        public IReadOnlyList<int> Sizes { get; }

        public void Extract(float[] images, int count, float[]?[] features, float[]? logits, uint[]? predicted)
        {
            var needHead = logits is not null || predicted is not null;
            var depth = needHead ? _model.Spec.LayerCount : _requests.Where((_, i) => features[i] is not null).Select(r => r.Cut).DefaultIfEmpty(0).Max();
            if (depth == 0) return;
            var input = _model.InputShape;
            _model._network.Forward(images, count, [input.Channels, input.Height, input.Width], (network, x) =>
            {
                var h = network.Stem(x);
                for (var layer = 1; layer <= depth; layer++)
                {
                    h = network.Block(layer, h);
                    for (var i = 0; i < _requests.Length; i++)
                    {
                        if (_requests[i].Cut != layer || features[i] is not { } target) continue;
                        var reduced = _requests[i].Reduction.Apply(h.reshape(count, _shapes[i].Size), _shapes[i]);
                        TensorOutputs.CopyRows(reduced, target, count, Sizes[i]);
                    }
                }
                if (!needHead) return;
                var output = network.Head(h);
                if (logits is not null) TensorOutputs.CopyRows(output, logits, count, _model.ClassCount);
                if (predicted is not null) TensorOutputs.ArgmaxKeys(output, predicted, count);
            });
        }

        public void Dispose()
        {
        }
    }
}
