using Gati.MLNet.Data;
using Gati.MLNet.Onnx;
using Onnx;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;

namespace Gati.MLNet.Models;

/// <summary>
/// Writes a learned cache's networks as ONNX nodes: the predictor (FC, Pool or Conv, ending in LogSoftmax, the same
/// function as <see cref="PredictorNetwork"/>) and the selector with its exit threshold (a boolean hit per row, as
/// <see cref="Inference.LearnedCache"/>'s lookup decides it).
/// </summary>
internal static class CacheOnnx
{
    /// <summary>
    /// Log-probabilities [N, k] from a layer's output: [N, C, H, W], or already flattened [N, D]. Each kind flattens it
    /// in its own single node (the Conv predictor straight to its one-channel signal), since at batch 1 every node
    /// costs about a microsecond whatever it does.
    /// </summary>
    public static string Predictor(OnnxGraphBuilder graph, PredictorNetwork predictor, string features, string prefix, long[]? featureDims = null)
    {
        var weights = new TorchWeights(predictor, $"{predictor.Architecture} predictor");
        var architecture = predictor.Architecture;
        string logits;
        switch (architecture.Kind)
        {
            case PredictorKind.FC:
                var flat = graph.Node("Flatten", [features], ("axis", 1));
                logits = Gemm(graph, weights, "fc2", graph.Node("Relu", [Gemm(graph, weights, "fc1", flat, prefix)]), prefix);
                break;
            case PredictorKind.Pool:
                var pooled = FeatureReduction.AdaptiveAveragePool1d(graph, graph.Node("Flatten", [features], ("axis", 1)), predictor.InputSize, architecture.PoolSize, prefix);
                logits = Gemm(graph, weights, "fc2", graph.Node("Relu", [Gemm(graph, weights, "fc1", pooled, prefix)]), prefix);
                break;
            case PredictorKind.Grid:
                if (featureDims is not { Length: 3 }) throw new ArgumentException($"A {architecture} predictor reads a feature map [C, H, W]; its cut point's features are [{string.Join(", ", featureDims ?? [])}].");
                var grid = FeatureReduction.Grid(architecture.GridSize).Emit(graph, features, featureDims, prefix + ".grid");
                var cells = graph.Node("Flatten", [grid], ("axis", 1));
                logits = Gemm(graph, weights, "fc2", graph.Node("Relu", [Gemm(graph, weights, "fc1", cells, prefix)]), prefix);
                break;
            case PredictorKind.Conv:
                var w = weights.Get("conv.weight", out var shape); // [1, 1, k]
                var b = weights.Get("conv.bias");
                // [N, 1, D]: one channel of D values, whatever the rank of the features.
                var signal = graph.Node("Reshape", [features, graph.Int64Constant(prefix + ".signal", [0, 1, -1], 3)]);
                var convolved = graph.Node("Conv", [signal, graph.Constant(prefix + ".conv.weight", w, shape), graph.Constant(prefix + ".conv.bias", b, 1)],
                    ("kernel_shape", new long[] { architecture.Kernel }), ("strides", new long[] { architecture.Stride }));
                logits = Gemm(graph, weights, "fc", graph.Node("Flatten", [graph.Node("Relu", [convolved])], ("axis", 1)), prefix);
                break;
            default:
                throw new NotSupportedException($"No ONNX export for predictor kind {architecture.Kind}.");
        }
        return graph.Node("LogSoftmax", [logits], ("axis", 1));
    }

    /// <summary>
    /// The cache as a standalone graph: input <c>Features</c> [N, ...<paramref name="featureShape"/>] (a cut point's
    /// value as the base graph holds it: [N, C, H, W], or [N, D] when <paramref name="vector"/>), outputs
    /// <c>LogProbabilities</c> [N, k] and <c>HitProbability</c> [N].
    /// </summary>
    public static byte[] Graph(PredictorNetwork predictor, SelectorNetwork selector, TensorShape featureShape, bool vector = false)
    {
        var graph = new OnnxGraphBuilder($"gati-cache-{predictor.Architecture.Id}");
        long[] dims = vector ? [featureShape.Size] : [featureShape.Channels, featureShape.Height, featureShape.Width];
        var features = graph.Input(FeaturesInput, TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
        var logProbabilities = graph.Rename(Predictor(graph, predictor, features, "p", dims), LogProbabilitiesOutput);
        var hitProbability = graph.Rename(HitProbability(graph, selector, logProbabilities, "s"), HitProbabilityOutput);
        graph.Output(logProbabilities, TensorProto.Types.DataType.Float, null, predictor.Classes);
        graph.Output(hitProbability, TensorProto.Types.DataType.Float, (long?)null);
        return graph.ToBytes();
    }

    public const string FeaturesInput = "Features";
    public const string LogProbabilitiesOutput = "LogProbabilities";
    public const string HitProbabilityOutput = "HitProbability";

    /// <summary>Hit flags [N] (bool): the selector's P(hit) at least <paramref name="threshold"/> (a constant).</summary>
    public static string Hits(OnnxGraphBuilder graph, SelectorNetwork selector, float threshold, string logProbabilities, string prefix) =>
        graph.Node("GreaterOrEqual", [HitProbability(graph, selector, logProbabilities, prefix), graph.Constant(prefix + ".threshold", [threshold])]);

    /// <summary>The selector's P(hit) [N] from the predictor's log-probabilities [N, k].</summary>
    public static string HitProbability(OnnxGraphBuilder graph, SelectorNetwork selector, string logProbabilities, string prefix) =>
        graph.Node("Squeeze", [HitProbabilityColumn(graph, selector, logProbabilities, prefix), graph.Int64Constant(prefix + ".column", [1], 1)]);

    /// <summary>
    /// The selector's P(hit) as a column [N, 1]. The selector's two logits l0 (miss) and l1 (hit) give
    /// softmax(l)[1] = sigmoid(l1 - l0), and l1 - l0 is one output of the last linear layer with the difference of its
    /// two weight rows: so a Gemm to one column and a Sigmoid replace the Gemm, Softmax and Gather of the plain
    /// reading (equal to float rounding; <see cref="SelectorNetwork.HitProbability"/> is the reference).
    /// </summary>
    public static string HitProbabilityColumn(OnnxGraphBuilder graph, SelectorNetwork selector, string logProbabilities, string prefix)
    {
        var weights = new TorchWeights(selector, "selector");
        var x = logProbabilities;
        if (selector.Architecture.Input == SelectorInput.Sorted)
            x = graph.Node("TopK", [x, graph.Int64Constant(prefix + ".k", [selector.Classes], 1)], 2, ("axis", 1), ("largest", 1), ("sorted", 1))[0];
        var last = "fc1";
        if (weights.Contains("fc2.weight"))
        {
            x = graph.Node("Relu", [Gemm(graph, weights, "fc1", x, prefix)]);
            last = "fc2";
        }
        var w = weights.Get(last + ".weight", out var shape); // [2, h]
        var b = weights.Get(last + ".bias");
        if (shape is not [2, var hidden]) throw new InvalidOperationException($"The selector's {last} has shape [{string.Join(", ", shape)}]; expected [2, h].");
        var difference = new float[hidden];
        for (var j = 0; j < hidden; j++) difference[j] = w[hidden + j] - w[j];
        var logit = graph.Node("Gemm", [x, graph.Constant($"{prefix}.{last}.hit-logit.weight", difference, 1, hidden), graph.Constant($"{prefix}.{last}.hit-logit.bias", [b[1] - b[0]], 1)],
            ("transB", 1));
        return graph.Node("Sigmoid", [logit]);
    }

    private static string Gemm(OnnxGraphBuilder graph, TorchWeights weights, string name, string input, string prefix)
    {
        var w = weights.Get(name + ".weight", out var shape);
        var b = weights.Get(name + ".bias");
        return graph.Node("Gemm", [input, graph.Constant($"{prefix}.{name}.weight", w, shape), graph.Constant($"{prefix}.{name}.bias", b, shape[0])], ("transB", 1));
    }
}
