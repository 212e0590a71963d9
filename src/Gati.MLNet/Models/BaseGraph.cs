using System.Globalization;
using System.Text.Json;
using Gati.MLNet.Data;
using Gati.MLNet.Onnx;
using Google.Protobuf;
using Onnx;

namespace Gati.MLNet.Models;

/// <summary>One cut point of a base graph: the value's name in the graph and its dimensions without the batch.</summary>
/// <param name="Number">1-based, in graph order.</param>
/// <param name="Name">The value's name in the graph.</param>
/// <param name="Dims">[C, H, W] for a feature map, [D] for a vector.</param>
internal sealed record GraphCut(int Number, string Name, long[] Dims)
{
    /// <summary>As a [C, H, W] shape ([D] becomes D x 1 x 1).</summary>
    public TensorShape Shape => Dims.Length == 3 ? new TensorShape((int)Dims[0], (int)Dims[1], (int)Dims[2]) : new TensorShape((int)Dims[0], 1, 1);
}

/// <summary>
/// A base model as ONNX, the form it is served in: one graph from the image input to the logits, in Gati's own opset
/// and conventions (<see cref="OnnxNormalizer"/>), with its cut points. Segments between cut points are cut out of it
/// (<see cref="Emit"/>), so the early-exit graphs of any base model — a Gati ResNet exported from its TorchSharp
/// weights, or an imported network — are built the same way, without TorchSharp.
/// </summary>
internal sealed class BaseGraph
{
    private const string CutPointsKey = "gati.cutPoints";
    private const string LogitsKey = "gati.logits";

    private readonly Dictionary<string, NodeProto> _producers;

    private BaseGraph(OnnxGraph graph, Dictionary<string, long[]> shapes, string logits, IReadOnlyList<string> cuts)
    {
        Graph = graph;
        Shapes = shapes;
        LogitsName = logits;
        _producers = graph.Producers();
        var input = graph.InputShape;
        InputShape = new TensorShape((int)input[1], (int)input[2], (int)input[3]);
        var logitsShape = shapes[logits];
        if (logitsShape.Length != 2 || logitsShape[0] != OnnxShapes.Batch || logitsShape[1] < 2)
            throw new InvalidDataException($"{graph.Name}: the scores '{logits}' have shape {OnnxShapes.Format(logitsShape)}; a classifier's scores are [N, k] with k >= 2.");
        ClassCount = (int)logitsShape[1];
        if (cuts.Count == 0)
            throw new InvalidDataException($"{graph.Name}: the graph has no cut point (no value that every path from the input to the output passes through), so nothing can exit early.");
        Cuts = cuts.Select((name, i) => new GraphCut(i + 1, name, shapes[name][1..])).ToArray();
    }

    public OnnxGraph Graph { get; }

    /// <summary>Shapes of every value (<see cref="OnnxShapes.Batch"/> first where a batch is).</summary>
    public IReadOnlyDictionary<string, long[]> Shapes { get; }

    /// <summary>The value holding the logits [N, k] (softmax gives the base model's probabilities).</summary>
    public string LogitsName { get; }

    public TensorShape InputShape { get; }

    public int ClassCount { get; }

    /// <summary>Cut points 1..n in graph order.</summary>
    public IReadOnlyList<GraphCut> Cuts { get; }

    /// <summary>
    /// Builds the base graph of a normalised graph whose output is the logits: cut points named by
    /// <paramref name="cutNames"/>, else those recorded in its metadata (Gati's own exports), else found automatically.
    /// </summary>
    public static BaseGraph Create(OnnxGraph graph, Dictionary<string, long[]> shapes, IReadOnlyList<string>? cutNames = null)
    {
        if (graph.Outputs.Count != 1) throw new ArgumentException("A base graph has one output, the logits.", nameof(graph));
        var logits = graph.Outputs[0];
        if (cutNames is null && graph.Metadata.TryGetValue(CutPointsKey, out var recorded))
        {
            try
            {
                cutNames = JsonSerializer.Deserialize<string[]>(recorded);
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"{graph.Name}: its '{CutPointsKey}' metadata is not a JSON array of names: {ex.Message}", ex);
            }
        }
        var cuts = cutNames is null ? OnnxCutPoints.Find(graph, shapes, logits) : OnnxCutPoints.Check(graph, shapes, logits, cutNames);
        return new BaseGraph(graph, shapes, logits, cuts);
    }

    /// <summary>The graph as a standalone model: input, the logits output, cut points and logits recorded in its metadata.</summary>
    public byte[] ToBytes()
    {
        var graph = Graph.Clone();
        graph.Metadata[CutPointsKey] = JsonSerializer.Serialize(Cuts.Select(c => c.Name));
        graph.Metadata[LogitsKey] = LogitsName;
        return graph.ToModel(Shapes.ToDictionary(p => p.Key, p => p.Value)).ToByteArray();
    }

    /// <summary>Reads a base graph written by <see cref="ToBytes"/> (e.g. from a model zip).</summary>
    public static BaseGraph FromBytes(byte[] bytes, string what)
    {
        var model = OnnxModelFile.Parse(bytes, what, directory: null);
        var graph = OnnxModelFile.ToGraph(model, what);
        if (!graph.Metadata.ContainsKey(CutPointsKey)) throw new InvalidDataException($"{what}: not a Gati base graph (no '{CutPointsKey}' metadata).");
        var shapes = OnnxNormalizer.Normalize(graph);
        return Create(graph, shapes);
    }

    /// <summary>The cut point numbered <paramref name="number"/> (1-based).</summary>
    public GraphCut Cut(int number) =>
        number >= 1 && number <= Cuts.Count
            ? Cuts[number - 1]
            : throw new ArgumentOutOfRangeException(nameof(number), number, $"The base model has cut points 1..{Cuts.Count}; {number} does not exist.");

    /// <summary>The dimensions (without the batch) of the value at cut point <paramref name="cut"/>; 0 is the input.</summary>
    public long[] DimsAt(int cut) => cut == 0 ? Graph.InputShape[1..] : Cut(cut).Dims;

    /// <summary>
    /// Copies into <paramref name="builder"/> the nodes that compute cut point <paramref name="to"/> from cut point
    /// <paramref name="from"/> (0: the input; <paramref name="to"/> = n + 1: the logits), reading
    /// <paramref name="input"/>; returns the name of the result in the builder.
    /// </summary>
    public string Emit(OnnxGraphBuilder builder, int from, int to, string input, string prefix)
    {
        if (from < 0 || from > Cuts.Count || to <= from || to > Cuts.Count + 1)
            throw new ArgumentOutOfRangeException(nameof(to), $"No segment from cut point {from} to {to} (cut points 1..{Cuts.Count}, {Cuts.Count + 1} = the scores).");
        var source = from == 0 ? Graph.Input : Cuts[from - 1].Name;
        var target = to == Cuts.Count + 1 ? LogitsName : Cuts[to - 1].Name;
        var names = builder.Append(Slice(source, target), Graph.Initializers, new Dictionary<string, string>(StringComparer.Ordinal) { [source] = input }, prefix);
        return names[target];
    }

    /// <summary>The nodes computing <paramref name="target"/> from <paramref name="source"/>, in graph order.</summary>
    public List<NodeProto> Slice(string source, string target)
    {
        var needed = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<string>();
        pending.Push(target);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (pending.Count > 0)
        {
            var value = pending.Pop();
            if (value == source || !seen.Add(value) || Graph.Initializers.ContainsKey(value)) continue;
            if (value == Graph.Input)
                throw new InvalidOperationException($"{Graph.Name}: '{target}' depends on the input other than through '{source}'.");
            if (!_producers.TryGetValue(value, out var node)) throw new InvalidOperationException($"{Graph.Name}: nothing produces '{value}'.");
            if (!needed.Add(node)) continue;
            foreach (var input in node.Input)
                if (input.Length > 0) pending.Push(input);
        }
        return Graph.Nodes.Where(needed.Contains).ToList();
    }

    /// <summary>
    /// The base model's head, when it is a global average over the channels of the last cut point followed by one linear
    /// layer (what a ResNet ends with): weights [k, C] row-major and bias [k]. Null otherwise.
    /// </summary>
    public (float[] Weight, float[] Bias)? LinearHead()
    {
        var last = Cuts[^1];
        if (last.Dims.Length != 3) return null;
        var channels = last.Dims[0];
        var nodes = Slice(last.Name, LogitsName);
        var i = 0;
        if (i >= nodes.Count || !IsGlobalAverage(nodes[i], last)) return null;
        i++;
        if (i < nodes.Count && nodes[i].OpType is "Flatten" or "Reshape" or "Squeeze") i++;
        if (i >= nodes.Count) return null;
        float[] weight, bias;
        var node = nodes[i];
        if (node.OpType == "Gemm" && i == nodes.Count - 1 && OnnxGraph.Int(node, "transA", 0) == 0 && OnnxGraph.Float(node, "alpha", 1) == 1 && OnnxGraph.Float(node, "beta", 1) == 1
            && Graph.Initializers.TryGetValue(node.Input[1], out var b) && b.Dims.Count == 2)
        {
            var w = OnnxTensors.Floats(b, Graph.Name);
            var transB = OnnxGraph.Int(node, "transB", 0) != 0;
            var (rows, cols) = ((int)b.Dims[0], (int)b.Dims[1]);
            var k = transB ? rows : cols;
            if ((transB ? cols : rows) != channels) return null;
            weight = new float[k * channels];
            for (var c = 0; c < k; c++)
                for (var j = 0; j < channels; j++) weight[c * channels + j] = transB ? w[c * cols + j] : w[j * cols + c];
            bias = node.Input.Count > 2 && node.Input[2].Length > 0 && Graph.Initializers.TryGetValue(node.Input[2], out var biasTensor)
                ? Expand(OnnxTensors.Floats(biasTensor, Graph.Name), k)
                : node.Input.Count > 2 && node.Input[2].Length > 0 ? [] : new float[k];
            if (bias.Length != k) return null;
            return (weight, bias);
        }
        return null;
    }

    private static float[] Expand(float[] values, int k) => values.Length == k ? values : values.Length == 1 ? Enumerable.Repeat(values[0], k).ToArray() : [];

    private bool IsGlobalAverage(NodeProto node, GraphCut cut) => node.OpType switch
    {
        "GlobalAveragePool" => true,
        "AveragePool" => OnnxGraph.Ints(node, "kernel_shape") is [var kh, var kw] && kh == cut.Dims[1] && kw == cut.Dims[2]
                         && (OnnxGraph.Ints(node, "pads") ?? [0, 0, 0, 0]).All(p => p == 0) && (OnnxGraph.String(node, "auto_pad") ?? "NOTSET") is "NOTSET" or "VALID",
        "ReduceMean" => OnnxGraph.Ints(node, "axes") is { } axes && axes.Order().SequenceEqual(new long[] { 2, 3 }),
        _ => false,
    };

    /// <summary>
    /// The whole model as one graph: input <c>Image</c>, outputs <c>Logits</c> and <c>Score</c> (softmax); the cut points'
    /// names (kept where they do not clash) recorded in its metadata, so that importing it finds the same cut points.
    /// </summary>
    public byte[] FullModel(IReadOnlyDictionary<string, string> metadata)
    {
        var builder = new OnnxGraphBuilder(Graph.Name);
        var dims = Graph.InputShape[1..];
        var input = builder.Input("Image", TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
        // Reserve the output names first, so that the copied values keep theirs or get another.
        var names = builder.Append(Slice(Graph.Input, LogitsName), Graph.Initializers,
            new Dictionary<string, string>(StringComparer.Ordinal) { [Graph.Input] = input }, "");
        var logits = names[LogitsName] == "Logits" ? "Logits" : builder.Rename(names[LogitsName], "Logits");
        var score = builder.Rename(builder.Node("Softmax", [logits], ("axis", 1)), "Score");
        builder.Output(logits, TensorProto.Types.DataType.Float, null, ClassCount);
        builder.Output(score, TensorProto.Types.DataType.Float, null, ClassCount);
        var all = new Dictionary<string, string>(metadata) { [CutPointsKey] = JsonSerializer.Serialize(Cuts.Select(c => names[c.Name])) };
        return builder.ToBytes(all);
    }

    /// <summary>A short description: "74 nodes, 10 cut points (64x56x56 ... 512x7x7), 15.9 M parameters".</summary>
    public string Describe()
    {
        var parameters = Graph.Initializers.Values.Where(OnnxTensors.IsFloatingPoint).Sum(t => OnnxTensors.ElementCount(t, Graph.Name));
        return string.Create(CultureInfo.InvariantCulture,
            $"{Graph.Nodes.Count} nodes, {Cuts.Count} cut points ({Cuts[0].Shape} ... {Cuts[^1].Shape}), {parameters / 1e6:F1} M parameters");
    }
}
