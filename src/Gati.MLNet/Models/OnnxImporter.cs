using Gati.MLNet.Onnx;
using Onnx;

namespace Gati.MLNet.Models;

/// <summary>What the chosen output of an imported graph holds.</summary>
internal enum ImportedOutput
{
    /// <summary>Class scores before softmax.</summary>
    Logits,

    /// <summary>Class probabilities (a final Softmax is removed; otherwise the logits are their logarithm).</summary>
    Probabilities,

    /// <summary>Features that a <see cref="LinearHead"/> turns into logits (a featurizer plus an ML.NET trainer).</summary>
    Features,
}

/// <summary>
/// A linear classifier on a featurizer's output, as ML.NET's linear multiclass trainers fit it: logits = W·x + b, with
/// W [k, D] row-major. An affine normaliser before it (ML.NET's min-max or mean-variance: (x − offset)·scale) folds in.
/// </summary>
internal sealed record LinearHead(float[] Weight, float[] Bias, int Classes, int Features)
{
    public LinearHead Validate()
    {
        if (Classes < 2 || Features < 1 || Weight.Length != (long)Classes * Features || Bias.Length != Classes)
            throw new ArgumentException($"A linear head of {Classes} classes on {Features} features needs {(long)Classes * Features} weights and {Classes} biases (got {Weight.Length} and {Bias.Length}).");
        if (Weight.Any(w => !float.IsFinite(w)) || Bias.Any(b => !float.IsFinite(b)))
            throw new ArgumentException("The linear head holds NaN or infinite weights.");
        return this;
    }

    /// <summary>The head applied after (x − offset)·scale, as one linear map of x.</summary>
    public LinearHead AfterAffine(float[] scale, float[] offset)
    {
        if (scale.Length != Features || offset.Length != Features)
            throw new ArgumentException($"The normaliser has {scale.Length} scales and {offset.Length} offsets for {Features} features.");
        var weight = new float[Weight.Length];
        var bias = new float[Classes];
        for (var c = 0; c < Classes; c++)
        {
            double shift = Bias[c];
            for (var j = 0; j < Features; j++)
            {
                var w = (double)Weight[c * Features + j] * scale[j];
                weight[c * Features + j] = (float)w;
                shift -= w * offset[j];
            }
            bias[c] = (float)shift;
        }
        return new LinearHead(weight, bias, Classes, Features).Validate();
    }
}

/// <summary>One ONNX model to import: the parsed model, what it is called in messages and which output to take.</summary>
internal sealed record ImportedGraph(ModelProto Model, string What, string? Output = null);

/// <summary>
/// Builds a <see cref="BaseGraph"/> from someone else's ONNX model: an optional preprocessing graph in front, the
/// network, and — for a featurizer — the linear head of the ML.NET trainer fitted on its output; each normalised
/// (<see cref="OnnxNormalizer"/>) and joined into one graph from the image input to the logits, then cut points found or
/// checked. The network's own value names are kept (a user names cut points by them); the preprocessing graph's and
/// the head's get prefixes.
/// </summary>
internal static class OnnxImporter
{
    /// <summary>
    /// Joins <paramref name="graphs"/> in data-flow order (each earlier one prepares the next one's input; the last is the
    /// network, whose value names are kept) and makes the result a base graph.
    /// </summary>
    public static BaseGraph Import(IReadOnlyList<ImportedGraph> graphs, ImportedOutput kind, LinearHead? head = null, IReadOnlyList<string>? cutPoints = null)
    {
        if (graphs.Count == 0) throw new ArgumentException("No graph to import.", nameof(graphs));
        if (graphs.Count > 2)
            throw new ArgumentException($"The features come through {graphs.Count} ONNX models; Gati imports a network with at most one preprocessing model before it.", nameof(graphs));
        return Import(graphs[^1], kind, head, graphs.Count == 2 ? graphs[0] : null, cutPoints);
    }

    public static BaseGraph Import(ImportedGraph network, ImportedOutput kind, LinearHead? head = null, ImportedGraph? preprocessing = null,
        IReadOnlyList<string>? cutPoints = null)
    {
        if (kind == ImportedOutput.Features && head is null)
            throw new ArgumentException("A featurizer's output needs a linear head (the ML.NET trainer fitted on it) to become class scores.", nameof(head));
        if (kind != ImportedOutput.Features && head is not null)
            throw new ArgumentException("A linear head goes after a featurizer's output, not after class scores.", nameof(head));
        var main = OnnxModelFile.ToGraph(network.Model, network.What, network.Output);
        var shapes = OnnxNormalizer.Normalize(main);
        var output = main.Outputs[0];
        var graph = main;
        if (preprocessing is not null)
        {
            var pre = OnnxModelFile.ToGraph(preprocessing.Model, preprocessing.What, preprocessing.Output);
            var preShapes = OnnxNormalizer.Normalize(pre);
            var preOutput = preShapes[pre.Outputs[0]];
            if (!preOutput.SequenceEqual(main.InputShape))
                throw new InvalidDataException($"{preprocessing.What} produces {OnnxShapes.Format(preOutput)}, but {network.What} reads {OnnxShapes.Format(main.InputShape)}.");
            graph = Join(pre, main);
        }
        graph.Name = network.What;
        var logits = AppendHead(graph, output, kind, head);
        graph.Outputs.Clear();
        graph.Outputs.Add(logits);
        graph.RemoveUnused();
        graph.SortTopologically();
        var all = OnnxShapes.Infer(graph);
        return BaseGraph.Create(graph, all, cutPoints);
    }

    /// <summary>The preprocessing graph (values prefixed) feeding the network: one graph whose input is the preprocessing's.</summary>
    private static OnnxGraph Join(OnnxGraph pre, OnnxGraph main)
    {
        const string prefix = "preprocess/";
        string Rename(string name) => name.Length == 0 || name == pre.Input ? name : prefix + name;
        var taken = new HashSet<string>(main.Initializers.Keys, StringComparer.Ordinal) { main.Input };
        foreach (var node in main.Nodes) taken.UnionWith(node.Output);
        var nodes = new List<NodeProto>();
        foreach (var node in pre.Nodes)
        {
            var copy = node.Clone();
            for (var i = 0; i < copy.Input.Count; i++) copy.Input[i] = Rename(copy.Input[i]);
            for (var i = 0; i < copy.Output.Count; i++) copy.Output[i] = Rename(copy.Output[i]);
            copy.Name = prefix + copy.Name;
            if (copy.Output.Any(taken.Contains)) throw new InvalidDataException($"{main.Name}: a value name of the preprocessing graph collides with the network's.");
            nodes.Add(copy);
        }
        var initializers = new Dictionary<string, TensorProto>(main.Initializers, StringComparer.Ordinal);
        foreach (var (name, tensor) in pre.Initializers)
            if (!initializers.TryAdd(Rename(name), OnnxTensors.Renamed(tensor, Rename(name))))
                throw new InvalidDataException($"{main.Name}: initializer '{Rename(name)}' of the preprocessing graph collides with the network's.");
        var joined = Rename(pre.Outputs[0]);
        var rest = main.Nodes.Select(n => n.Clone()).ToList();
        foreach (var node in rest)
            for (var i = 0; i < node.Input.Count; i++)
                if (node.Input[i] == main.Input) node.Input[i] = joined;
        var metadata = new Dictionary<string, string>(main.Metadata, StringComparer.Ordinal);
        return new OnnxGraph(main.Name, [.. nodes, .. rest], initializers, pre.Input, pre.InputShape, [.. main.Outputs], OnnxGraphBuilder.Opset, metadata);
    }

    /// <summary>Adds what turns the chosen output into logits; returns the logits' value name.</summary>
    private static string AppendHead(OnnxGraph graph, string output, ImportedOutput kind, LinearHead? head)
    {
        var shapes = OnnxShapes.Infer(graph);
        var shape = shapes[output];
        var what = $"{graph.Name}: output '{output}' {OnnxShapes.Format(shape)}";
        if (shape[0] != OnnxShapes.Batch) throw new InvalidDataException($"{what} does not carry the batch.");
        var flat = output;
        var size = shape.Skip(1).Aggregate(1L, (a, b) => a * b);
        if (shape.Length != 2)
        {
            if (shape.Length == 4 && (kind == ImportedOutput.Features || (shape[2] == 1 && shape[3] == 1)))
            {
                flat = graph.UniqueName("head/flat");
                graph.Nodes.Add(OnnxGraph.NewNode("Flatten", graph.UniqueName("head/flatten"), [output], [flat]));
                OnnxGraph.SetInt(graph.Nodes[^1], "axis", 1);
            }
            else
            {
                throw new InvalidDataException($"{what}: class scores must be [N, k] (or [N, k, 1, 1]).");
            }
        }
        switch (kind)
        {
            case ImportedOutput.Logits:
                return flat;
            case ImportedOutput.Probabilities:
            {
                var producer = graph.Producers().GetValueOrDefault(output);
                if (producer is { OpType: "Softmax" } && flat == output && graph.Consumers().GetValueOrDefault(output) is null)
                    return producer.Input[0];
                var log = graph.UniqueName("head/logits");
                graph.Nodes.Add(OnnxGraph.NewNode("Log", graph.UniqueName("head/log"), [flat], [log]));
                return log;
            }
            default:
            {
                head!.Validate();
                if (head.Features != size) throw new InvalidDataException($"{what} holds {size} features, but the linear head reads {head.Features}.");
                var weight = graph.AddFloatInitializer("head/weight", head.Weight, head.Classes, head.Features);
                var bias = graph.AddFloatInitializer("head/bias", head.Bias, head.Classes);
                var logits = graph.UniqueName("head/logits");
                var gemm = OnnxGraph.NewNode("Gemm", graph.UniqueName("head/gemm"), [flat, weight, bias], [logits]);
                OnnxGraph.SetInt(gemm, "transB", 1);
                graph.Nodes.Add(gemm);
                return logits;
            }
        }
    }
}
