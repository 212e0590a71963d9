using System.Globalization;
using Gati.MLNet.Onnx;
using Onnx;

namespace Gati.MLNet.Models;

/// <summary>
/// Writes a <see cref="ResNet"/> (every depth, basic and bottleneck blocks, any input channels) as ONNX nodes:
/// convolutions with their batch norms folded in (eval mode: W' = W·γ/√(σ²+ε), b' = β − μ·γ/√(σ²+ε)), ReLU, the
/// residual Add, global average pool and the linear head. Stem, blocks and head are emitted separately so that the
/// early-exit segments can cut the network between any two blocks.
/// </summary>
internal static class ResNetOnnx
{
    /// <summary>TorchSharp's (and PyTorch's) BatchNorm2d epsilon, which every Gati ResNet uses.</summary>
    public const double BatchNormEpsilon = 1e-5;

    /// <summary>Conv 3x3 + BN + ReLU of the stem.</summary>
    public static string Stem(OnnxGraphBuilder graph, TorchWeights weights, string input) =>
        graph.Node("Relu", [FoldedConvolution(graph, weights, "conv1", "bn1", stride: 1, input)]);

    /// <summary>Residual block <paramref name="layer"/> (1-based); its output gets the name <paramref name="output"/> when given.</summary>
    public static string Block(OnnxGraphBuilder graph, ResNet network, TorchWeights weights, int layer, string input, string? output = null)
    {
        var (stage, index) = network.Spec.Locate(layer);
        var prefix = string.Create(CultureInfo.InvariantCulture, $"layer{stage}.{index}");
        var stride = index == 0 && stage > 1 ? 2 : 1;
        string x;
        if (network.Spec.Bottleneck)
        {
            x = graph.Node("Relu", [FoldedConvolution(graph, weights, prefix + ".conv1", prefix + ".bn1", 1, input)]);
            x = graph.Node("Relu", [FoldedConvolution(graph, weights, prefix + ".conv2", prefix + ".bn2", stride, x)]);
            x = FoldedConvolution(graph, weights, prefix + ".conv3", prefix + ".bn3", 1, x);
        }
        else
        {
            x = graph.Node("Relu", [FoldedConvolution(graph, weights, prefix + ".conv1", prefix + ".bn1", stride, input)]);
            x = FoldedConvolution(graph, weights, prefix + ".conv2", prefix + ".bn2", 1, x);
        }
        var shortcut = weights.Contains(prefix + ".shortcut.0.weight")
            ? FoldedConvolution(graph, weights, prefix + ".shortcut.0", prefix + ".shortcut.1", stride, input)
            : input;
        var sum = graph.Node("Add", [x, shortcut]);
        return output is null ? graph.Node("Relu", [sum]) : graph.NodeNamed("Relu", [sum], output);
    }

    /// <summary>The name of layer <paramref name="layer"/>'s output in <see cref="BaseGraphModel"/>: its cut point's name.</summary>
    public static string CutName(int layer) => string.Create(CultureInfo.InvariantCulture, $"layer{layer}");

    /// <summary>
    /// The network as its base graph (<see cref="BaseGraph"/>): input <c>Input</c> [N, C, H, W], output <c>Logits</c>
    /// [N, k], block outputs named <c>layer1</c>..<c>layerL</c> and recorded as its cut points.
    /// </summary>
    public static byte[] BaseGraphModel(ResNet network, IReadOnlyDictionary<string, string> metadata)
    {
        var config = network.Config;
        var weights = new TorchWeights(network, $"{config.Architecture} base model");
        var graph = new OnnxGraphBuilder($"gati-{config.Architecture.ToString().ToLowerInvariant()}");
        var x = graph.Input("Input", TensorProto.Types.DataType.Float, null, config.InputShape.Channels, config.InputShape.Height, config.InputShape.Width);
        x = Stem(graph, weights, x);
        for (var layer = 1; layer <= network.LayerCount; layer++) x = Block(graph, network, weights, layer, x, CutName(layer));
        var pooled = graph.Node("Flatten", [graph.Node("GlobalAveragePool", [x])], ("axis", 1));
        var w = weights.Get("fc.weight", out var shape);
        var b = weights.Get("fc.bias");
        var logits = graph.NodeNamed("Gemm", [pooled, graph.Constant("fc.weight", w, shape), graph.Constant("fc.bias", b, shape[0])], "Logits", ("transB", 1));
        graph.Output(logits, TensorProto.Types.DataType.Float, null, config.ClassCount);
        var all = new Dictionary<string, string>(metadata) { ["gati.cutPoints"] = System.Text.Json.JsonSerializer.Serialize(Enumerable.Range(1, network.LayerCount).Select(CutName)) };
        return graph.ToBytes(all);
    }

    /// <summary>Global average pool, flatten and the linear head: logits [N, k].</summary>
    public static string Head(OnnxGraphBuilder graph, TorchWeights weights, string input)
    {
        var pooled = graph.Node("Flatten", [graph.Node("GlobalAveragePool", [input])], ("axis", 1));
        return Linear(graph, weights, "fc", pooled);
    }

    /// <summary>Gemm with PyTorch's [out, in] weight (transB) and bias.</summary>
    public static string Linear(OnnxGraphBuilder graph, TorchWeights weights, string name, string input)
    {
        var w = weights.Get(name + ".weight", out var shape);
        var b = weights.Get(name + ".bias");
        return graph.Node("Gemm", [input, graph.Constant(name + ".weight", w, shape), graph.Constant(name + ".bias", b, shape[0])], ("transB", 1));
    }

    /// <summary>
    /// Layers <paramref name="first"/>..<paramref name="last"/> in order, from the output of layer first - 1: layer 0 is
    /// the stem (its input the image), layers 1..L the residual blocks.
    /// </summary>
    public static string Layers(OnnxGraphBuilder graph, ResNet network, TorchWeights weights, int first, int last, string input)
    {
        var x = input;
        if (first == 0) x = Stem(graph, weights, x);
        for (var layer = Math.Max(first, 1); layer <= last; layer++) x = Block(graph, network, weights, layer, x);
        return x;
    }

    /// <summary>
    /// The whole network as one graph: input <c>Image</c> [N, C, H, W] (normalised pixels, as the ResNet transformer
    /// reads them), outputs <c>Logits</c> and <c>Score</c> (softmax probabilities) [N, k].
    /// </summary>
    public static byte[] FullModel(ResNet network, IReadOnlyDictionary<string, string> metadata)
    {
        var config = network.Config;
        var weights = new TorchWeights(network, $"{config.Architecture} base model");
        var graph = new OnnxGraphBuilder($"gati-{config.Architecture.ToString().ToLowerInvariant()}");
        var input = graph.Input("Image", TensorProto.Types.DataType.Float, null, config.InputShape.Channels, config.InputShape.Height, config.InputShape.Width);
        var x = Layers(graph, network, weights, 0, network.LayerCount, input);
        var logits = graph.Rename(Head(graph, weights, x), "Logits");
        var score = graph.Rename(graph.Node("Softmax", [logits], ("axis", 1)), "Score");
        graph.Output(logits, TensorProto.Types.DataType.Float, null, config.ClassCount);
        graph.Output(score, TensorProto.Types.DataType.Float, null, config.ClassCount);
        return graph.ToBytes(metadata);
    }

    private static string FoldedConvolution(OnnxGraphBuilder graph, TorchWeights weights, string conv, string batchNorm, int stride, string input)
    {
        var w = weights.Get(conv + ".weight", out var shape); // [out, in, k, k]
        var gamma = weights.Get(batchNorm + ".weight");
        var beta = weights.Get(batchNorm + ".bias");
        var mean = weights.Get(batchNorm + ".running_mean");
        var variance = weights.Get(batchNorm + ".running_var");
        var outChannels = (int)shape[0];
        var perChannel = w.Length / outChannels;
        var folded = new float[w.Length];
        var bias = new float[outChannels];
        for (var o = 0; o < outChannels; o++)
        {
            var scale = gamma[o] / Math.Sqrt(variance[o] + BatchNormEpsilon);
            for (var i = 0; i < perChannel; i++) folded[o * perChannel + i] = (float)(w[o * perChannel + i] * scale);
            bias[o] = (float)(beta[o] - mean[o] * scale);
        }
        var kernel = shape[2];
        var pad = kernel / 2;
        return graph.Node("Conv", [input, graph.Constant(conv + ".weight", folded, shape), graph.Constant(conv + ".bias", bias, outChannels)],
            ("kernel_shape", new[] { kernel, shape[3] }), ("pads", new[] { pad, pad, pad, pad }), ("strides", new long[] { stride, stride }));
    }
}
