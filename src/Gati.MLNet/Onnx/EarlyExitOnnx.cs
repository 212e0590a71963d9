using System.Globalization;
using Gati.MLNet.Inference;
using Gati.MLNet.Models;
using Onnx;

namespace Gati.MLNet.Onnx;

/// <summary>One ONNX graph of an early-exit model: the blocks up to a cache layer with that cache's lookup fused in, or the rest of the network with its head.</summary>
/// <param name="FirstLayer">First block computed (0 when the segment starts with the stem).</param>
/// <param name="LastLayer">Last block computed; for a cache segment, the cache's layer.</param>
/// <param name="IsFinal">True for the segment that ends with the head (no cache).</param>
/// <param name="Model">The .onnx bytes. Inputs: <c>Input</c> [N, C, H, W] (images for the first segment, the previous
/// layer's output after); a cache segment also <c>Threshold</c> [1], its exit threshold (an input, so that a serving
/// engine can move it without new sessions). Outputs: <c>Probabilities</c> [N, k]; a cache segment also <c>Hit</c> [N]
/// (bool: P(hit) at least the threshold), <c>HitProbability</c> [N] (the selector's P(hit)) and <c>Activation</c> (its
/// layer's output, the next segment's input).</param>
internal sealed record OnnxSegment(int FirstLayer, int LastLayer, bool IsFinal, byte[] Model)
{
    public const string Input = "Input";
    public const string Threshold = "Threshold";
    public const string Activation = "Activation";
    public const string Probabilities = "Probabilities";
    public const string Hit = "Hit";
    public const string HitProbability = "HitProbability";
}

/// <summary>Cuts a base model with its caches into ONNX segments (docs/model-format.md#onnx-segments).</summary>
internal static class EarlyExitOnnx
{
    public static IReadOnlyList<OnnxSegment> Segments(ResNet network, IReadOnlyList<LearnedCache> caches)
    {
        var config = network.Config;
        var weights = new TorchWeights(network, $"{config.Architecture} base model");
        var ordered = caches.OrderBy(c => c.Layer).ToArray();
        if (ordered.Select(c => c.Layer).Distinct().Count() != ordered.Length)
            throw new ArgumentException("Two caches on one layer: choose one per layer first (CacheOptimizer / gati optimize).", nameof(caches));
        var segments = new List<OnnxSegment>();
        var first = 0;
        foreach (var cache in ordered)
        {
            segments.Add(Segment(network, weights, first, cache.Layer, cache));
            first = cache.Layer + 1;
        }
        segments.Add(Segment(network, weights, first, network.LayerCount, null));
        return segments;
    }

    private static OnnxSegment Segment(ResNet network, TorchWeights weights, int first, int last, LearnedCache? cache)
    {
        var config = network.Config;
        var segmentFirst = first;
        var name = string.Create(CultureInfo.InvariantCulture, $"gati-segment-{first}-{last}{(cache is null ? "-head" : "")}");
        var graph = new OnnxGraphBuilder(name);
        var inputShape = first == 0 ? config.InputShape : network.LayerOutputShape(first - 1);
        var x = graph.Input(OnnxSegment.Input, TensorProto.Types.DataType.Float, null, inputShape.Channels, inputShape.Height, inputShape.Width);
        if (first == 0)
        {
            x = ResNetOnnx.Stem(graph, weights, x);
            first = 1;
        }
        for (var layer = first; layer <= last; layer++) x = ResNetOnnx.Block(graph, network, weights, layer, x);
        var k = config.ClassCount;
        if (cache is null)
        {
            var probabilities = graph.Rename(graph.Node("Softmax", [ResNetOnnx.Head(graph, weights, x)], ("axis", 1)), OnnxSegment.Probabilities);
            graph.Output(probabilities, TensorProto.Types.DataType.Float, null, k);
            return new OnnxSegment(segmentFirst, last, true, graph.ToBytes(OnnxMetadata.For(config)));
        }

        var shape = network.LayerOutputShape(last);
        var activation = graph.Rename(x, OnnxSegment.Activation);
        var features = graph.Node("Flatten", [activation], ("axis", 1));
        var prefix = string.Create(CultureInfo.InvariantCulture, $"cache{last}");
        var logProbabilities = CacheOnnx.Predictor(graph, cache.Predictor.Module, features, prefix);
        var threshold = graph.Input(OnnxSegment.Threshold, TensorProto.Types.DataType.Float, 1);
        var hitProbability = graph.Rename(CacheOnnx.HitProbability(graph, cache.Selector.Module, logProbabilities, prefix), OnnxSegment.HitProbability);
        var hit = graph.Rename(graph.Node("GreaterOrEqual", [hitProbability, threshold]), OnnxSegment.Hit);
        var probabilitiesOut = graph.Rename(graph.Node("Exp", [logProbabilities]), OnnxSegment.Probabilities);
        graph.Output(activation, TensorProto.Types.DataType.Float, null, shape.Channels, shape.Height, shape.Width);
        graph.Output(probabilitiesOut, TensorProto.Types.DataType.Float, null, k);
        graph.Output(hit, TensorProto.Types.DataType.Bool, (long?)null);
        graph.Output(hitProbability, TensorProto.Types.DataType.Float, (long?)null);
        return new OnnxSegment(segmentFirst, last, false, graph.ToBytes(OnnxMetadata.For(config)));
    }
}
