using Gati.MLNet.Data;
using Gati.MLNet.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gati.MLNet.Models;

/// <summary>
/// CIFAR-style ResNet (shared/notes/reference-algorithm.md): 3x3 stride-1 stem with BatchNorm and ReLU and no
/// max-pool, four stages of residual blocks (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2), global average pool and
/// a linear head. Field names follow PyTorch's state_dict (conv1, bn1, layer1..layer4, fc).
/// </summary>
/// <remarks>
/// Every residual block is addressable by its 1-based layer number across stages (ResNet-18: 1..8), which is how
/// learned caches attach to hidden layers and how the early-exit engine runs the model block by block:
/// <c>Stem</c>, then <c>Block(1)</c> ... <c>Block(L)</c>, then <c>Head</c>, equals <c>forward</c>.
/// </remarks>
public sealed class ResNet : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Sequential layer1;
    private readonly Sequential layer2;
    private readonly Sequential layer3;
    private readonly Sequential layer4;
    private readonly Linear fc;

    // The same block modules as in layer1..layer4, flattened in order; not registered a second time.
    private readonly nn.Module<Tensor, Tensor>[] _blocks;

    /// <summary>Builds an untrained network (weights initialised from TorchSharp's current RNG).</summary>
    /// <param name="config">Architecture, input channels, class count and base width.</param>
    public ResNet(ResNetConfig config) : base(config.Architecture.ToString())
    {
        config.Validate();
        Config = config;
        Spec = ResNetSpec.For(config.Architecture);
        var width = config.BaseWidth;
        conv1 = nn.Conv2d(config.InputShape.Channels, width, kernel_size: 3, stride: 1, padding: 1, bias: false);
        bn1 = nn.BatchNorm2d(width);

        var blocks = new List<nn.Module<Tensor, Tensor>>();
        long inPlanes = width;
        Sequential MakeStage(int stage, long planes, long stride)
        {
            var count = Spec.BlocksPerStage[stage];
            var modules = new List<(string, nn.Module<Tensor, Tensor>)>(count);
            for (var i = 0; i < count; i++)
            {
                nn.Module<Tensor, Tensor> block = Spec.Bottleneck
                    ? new Bottleneck($"layer{stage + 1}.{i}", inPlanes, planes, i == 0 ? stride : 1)
                    : new BasicBlock($"layer{stage + 1}.{i}", inPlanes, planes, i == 0 ? stride : 1);
                inPlanes = planes * Spec.Expansion;
                modules.Add((i.ToString(System.Globalization.CultureInfo.InvariantCulture), block));
                blocks.Add(block);
            }
            return nn.Sequential(modules);
        }

        layer1 = MakeStage(0, width, 1);
        layer2 = MakeStage(1, width * 2, 2);
        layer3 = MakeStage(2, width * 4, 2);
        layer4 = MakeStage(3, width * 8, 2);
        fc = nn.Linear(inPlanes, config.ClassCount);
        _blocks = blocks.ToArray();
        RegisterComponents();
    }

    /// <summary>The configuration this network was built from.</summary>
    public ResNetConfig Config { get; }

    /// <summary>The architecture's block layout.</summary>
    public ResNetSpec Spec { get; }

    /// <summary>Number of addressable layers (residual blocks).</summary>
    public int LayerCount => _blocks.Length;

    /// <summary>First convolution, BatchNorm and ReLU.</summary>
    public Tensor Stem(Tensor input) => nn.functional.relu(bn1.Normalize(conv1.forward(input)));

    /// <summary>Runs residual block <paramref name="layer"/> (1-based) on the previous layer's output.</summary>
    public Tensor Block(int layer, Tensor input)
    {
        Spec.CheckLayer(layer);
        return _blocks[layer - 1].call(input); // call, not forward: hooks (e.g. tests counting rows per block) see it
    }

    /// <summary>The linear layer of the head (its input is the global average of the last layer's channels).</summary>
    internal Linear HeadLinear => fc;

    /// <summary>Global average pool and the linear head: the logits from the last layer's output.</summary>
    public Tensor Head(Tensor lastLayerOutput)
    {
        var pooled = nn.functional.adaptive_avg_pool2d(lastLayerOutput, 1);
        return fc.forward(pooled.flatten(1));
    }

    /// <summary>Logits for a batch shaped [N, C, H, W].</summary>
    public override Tensor forward(Tensor input)
    {
        var x = Stem(input);
        x = layer1.forward(x);
        x = layer2.forward(x);
        x = layer3.forward(x);
        x = layer4.forward(x);
        return Head(x);
    }

    /// <summary>
    /// Logits plus the outputs of the requested layers (1-based), in one pass. The returned layer tensors are
    /// in the order of <paramref name="layers"/>.
    /// </summary>
    public (Tensor Logits, Tensor[] LayerOutputs) ForwardWithLayers(Tensor input, IReadOnlyList<int> layers)
    {
        foreach (var layer in layers) Spec.CheckLayer(layer, nameof(layers));
        var outputs = new Tensor[layers.Count];
        var x = Stem(input);
        for (var layer = 1; layer <= _blocks.Length; layer++)
        {
            x = _blocks[layer - 1].forward(x);
            for (var i = 0; i < layers.Count; i++)
                if (layers[i] == layer) outputs[i] = x;
        }
        return (Head(x), outputs);
    }

    /// <summary>The [C, H, W] output shape of a layer (0 = stem) for this network's input shape.</summary>
    public TensorShape LayerOutputShape(int layer) => Spec.LayerOutputShape(layer, Config.InputShape, Config.BaseWidth);
}
