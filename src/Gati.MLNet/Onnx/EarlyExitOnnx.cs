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

/// <summary>
/// The whole early exit as one ONNX graph for one input at a time: each cache's hit flag is the condition of an
/// <c>If</c> node whose then-branch returns the cache's probabilities and whose else-branch holds the rest of the
/// network (the next blocks, the next cache, its <c>If</c>, ...), so blocks after a hit are never run and a request
/// costs one session call however deep it goes. Inputs: <c>Input</c> [1, C, H, W] and one <c>Threshold{i}</c> [1] per
/// cache (in layer order). Outputs: <c>Probabilities</c> [1, k] and <c>Exit</c> [1] (int64: the index of the cache that
/// answered, or the number of caches when the base model did).
/// </summary>
internal static class EarlyExitSingleGraph
{
    public const string Exit = "Exit";

    public static string Threshold(int cache) => string.Create(CultureInfo.InvariantCulture, $"{OnnxSegment.Threshold}{cache}");

    public static byte[] Build(ResNet network, IReadOnlyList<LearnedCache> caches)
    {
        var config = network.Config;
        var ordered = caches.OrderBy(c => c.Layer).ToArray();
        var weights = new TorchWeights(network, $"{config.Architecture} base model");
        var graph = new OnnxGraphBuilder("gati-early-exit-single");
        var shape = config.InputShape;
        var x = graph.Input(OnnxSegment.Input, TensorProto.Types.DataType.Float, 1, shape.Channels, shape.Height, shape.Width);
        for (var i = 0; i < ordered.Length; i++) graph.Input(Threshold(i), TensorProto.Types.DataType.Float, 1);
        var (probabilities, exit) = From(graph, network, weights, ordered, 0, x);
        graph.Output(graph.Rename(probabilities, OnnxSegment.Probabilities), TensorProto.Types.DataType.Float, 1, config.ClassCount);
        graph.Output(graph.Rename(exit, Exit), TensorProto.Types.DataType.Int64, 1);
        return graph.ToBytes(OnnxMetadata.For(config));
    }

    /// <summary>Cache <paramref name="index"/>'s segment from the output of the previous one, and everything after it.</summary>
    private static (string Probabilities, string Exit) From(OnnxGraphBuilder graph, ResNet network, TorchWeights weights, LearnedCache[] caches, int index, string x)
    {
        var first = index == 0 ? 0 : caches[index - 1].Layer + 1;
        var last = index < caches.Length ? caches[index].Layer : network.LayerCount;
        x = ResNetOnnx.Layers(graph, network, weights, first, last, x);
        var k = network.Config.ClassCount;
        if (index == caches.Length)
        {
            var exitIndex = graph.Int64Constant("exit", [index], 1);
            return (graph.Node("Softmax", [ResNetOnnx.Head(graph, weights, x)], ("axis", 1)), graph.Node("Identity", [exitIndex]));
        }

        var cache = caches[index];
        var prefix = string.Create(CultureInfo.InvariantCulture, $"cache{last}");
        var logProbabilities = CacheOnnx.Predictor(graph, cache.Predictor.Module, x, prefix);
        // [1, 1]: an If condition needs one element, not a particular shape.
        var hit = graph.Node("GreaterOrEqual", [CacheOnnx.HitProbabilityColumn(graph, cache.Selector.Module, logProbabilities, prefix), Threshold(index)]);

        var answer = graph.Branch(prefix + "-hit");
        answer.Output(answer.Node("Exp", [logProbabilities]), TensorProto.Types.DataType.Float, 1, k);
        answer.Output(answer.Node("Identity", [answer.Int64Constant(prefix + ".exit", [index], 1)]), TensorProto.Types.DataType.Int64, 1);
        var rest = graph.Branch(prefix + "-miss");
        var (probabilities, exit) = From(rest, network, weights, caches, index + 1, x);
        rest.Output(probabilities, TensorProto.Types.DataType.Float, 1, k);
        rest.Output(exit, TensorProto.Types.DataType.Int64, 1);
        var outputs = graph.Node("If", [hit], 2, ("then_branch", answer.Graph), ("else_branch", rest.Graph));
        return (outputs[0], outputs[1]);
    }
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
        var name = string.Create(CultureInfo.InvariantCulture, $"gati-segment-{first}-{last}{(cache is null ? "-head" : "")}");
        var graph = new OnnxGraphBuilder(name);
        var inputShape = first == 0 ? config.InputShape : network.LayerOutputShape(first - 1);
        var x = ResNetOnnx.Layers(graph, network, weights, first, last,
            graph.Input(OnnxSegment.Input, TensorProto.Types.DataType.Float, null, inputShape.Channels, inputShape.Height, inputShape.Width));
        var k = config.ClassCount;
        if (cache is null)
        {
            var probabilities = graph.Rename(graph.Node("Softmax", [ResNetOnnx.Head(graph, weights, x)], ("axis", 1)), OnnxSegment.Probabilities);
            graph.Output(probabilities, TensorProto.Types.DataType.Float, null, k);
            return new OnnxSegment(first, last, true, graph.ToBytes(OnnxMetadata.For(config)));
        }

        var shape = network.LayerOutputShape(last);
        var activation = graph.Rename(x, OnnxSegment.Activation);
        var prefix = string.Create(CultureInfo.InvariantCulture, $"cache{last}");
        var logProbabilities = CacheOnnx.Predictor(graph, cache.Predictor.Module, activation, prefix);
        var threshold = graph.Input(OnnxSegment.Threshold, TensorProto.Types.DataType.Float, 1);
        var hitProbability = graph.Rename(CacheOnnx.HitProbability(graph, cache.Selector.Module, logProbabilities, prefix), OnnxSegment.HitProbability);
        var hit = graph.Rename(graph.Node("GreaterOrEqual", [hitProbability, threshold]), OnnxSegment.Hit);
        var probabilitiesOut = graph.Rename(graph.Node("Exp", [logProbabilities]), OnnxSegment.Probabilities);
        graph.Output(activation, TensorProto.Types.DataType.Float, null, shape.Channels, shape.Height, shape.Width);
        graph.Output(probabilitiesOut, TensorProto.Types.DataType.Float, null, k);
        graph.Output(hit, TensorProto.Types.DataType.Bool, (long?)null);
        graph.Output(hitProbability, TensorProto.Types.DataType.Float, (long?)null);
        return new OnnxSegment(first, last, false, graph.ToBytes(OnnxMetadata.For(config)));
    }
}
