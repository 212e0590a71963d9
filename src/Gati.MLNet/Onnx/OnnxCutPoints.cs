using Onnx;

namespace Gati.MLNet.Onnx;

/// <summary>
/// Where a graph can be cut: a value is a cut point when every path from the input to the output passes through it, so
/// that the graph after it needs nothing computed before it but that value (the blocks after an exit read only the
/// exit's activation). Found automatically (see <see cref="Find"/>) or named by the user and checked.
/// </summary>
internal static class OnnxCutPoints
{
    /// <summary>Element-wise and normalisation operators: a value they read is inside a layer, not between layers.</summary>
    private static readonly HashSet<string> WithinLayer = new(StringComparer.Ordinal)
    {
        "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Exp", "Log", "Sqrt", "Neg", "Abs", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min",
        "BatchNormalization", "Identity",
    };

    /// <summary>
    /// Every value (of rank 2 or 4, computed from the input, before the head) through which all paths from the input to
    /// <paramref name="output"/> pass, in topological order.
    /// </summary>
    public static List<string> Dominators(OnnxGraph graph, IReadOnlyDictionary<string, long[]> shapes, string output)
    {
        var consumers = graph.Consumers();
        var headStart = HeadStart(graph, shapes);
        var result = new List<string>();
        for (var i = 0; i < headStart; i++)
        {
            var node = graph.Nodes[i];
            foreach (var value in node.Output)
            {
                if (value.Length == 0 || value == output || !shapes.TryGetValue(value, out var shape)) continue;
                if (shape.Length is not (2 or 4) || shape[0] != OnnxShapes.Batch) continue;
                if (IsDominator(graph, consumers, value, output)) result.Add(value);
            }
        }
        return result;
    }

    /// <summary>
    /// Cut points found automatically: in a network with skip connections, the values that feed two or more nodes (the
    /// start of each residual block) plus the last feature map before the head; in a plain chain, each value that leaves
    /// a layer (read by a convolution, pooling or linear operator rather than an element-wise one).
    /// </summary>
    public static List<string> Find(OnnxGraph graph, IReadOnlyDictionary<string, long[]> shapes, string output)
    {
        var dominators = Dominators(graph, shapes, output);
        var consumers = graph.Consumers();
        var producers = graph.Producers();
        var branching = dominators.Where(v => consumers.TryGetValue(v, out var c) && c.Count >= 2).ToList();
        List<string> chosen;
        if (branching.Count > 0)
        {
            // The values that start a residual block (read by the block and its shortcut), and those that end one (a sum of
            // branches, or its activation) even when what follows is a plain layer.
            bool EndsBlock(string value)
            {
                if (!producers.TryGetValue(value, out var node)) return false;
                // A sum of branches ends a block, unless an activation follows it (then the activation does).
                if (node.OpType is "Add" or "Sum")
                    return !(consumers.TryGetValue(value, out var readers) && readers.Count == 1 && readers[0].OpType is "Relu" or "LeakyRelu" or "Clip");
                return node.OpType is "Relu" or "LeakyRelu" or "Clip" && producers.TryGetValue(node.Input[0], out var sum) && sum.OpType is "Add" or "Sum";
            }
            chosen = branching.Union(dominators.Where(EndsBlock)).ToList();
            var lastMap = dominators.LastOrDefault(v => shapes[v].Length == 4);
            if (lastMap is not null && !chosen.Contains(lastMap)) chosen.Add(lastMap);
        }
        else
        {
            chosen = dominators.Where(v => consumers.TryGetValue(v, out var c) && c.Count == 1 && !WithinLayer.Contains(c[0].OpType)).ToList();
        }
        // In graph order.
        var order = dominators.Select((v, i) => (v, i)).ToDictionary(p => p.v, p => p.i, StringComparer.Ordinal);
        return chosen.OrderBy(v => order[v]).ToList();
    }

    /// <summary>Checks user-named cut points and puts them in graph order; an error names a value that is not a cut and why.</summary>
    public static List<string> Check(OnnxGraph graph, IReadOnlyDictionary<string, long[]> shapes, string output, IReadOnlyList<string> names)
    {
        var producers = graph.Producers();
        var consumers = graph.Consumers();
        var position = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        for (var i = 0; i < graph.Nodes.Count; i++) position[graph.Nodes[i]] = i;
        var result = new List<(string Name, int Position)>();
        foreach (var name in names)
        {
            if (result.Any(r => r.Name == name)) throw new ArgumentException($"Cut point '{name}' is named twice.");
            if (!producers.TryGetValue(name, out var node))
                throw new ArgumentException($"'{name}' is not a value computed by {graph.Name} (it is {(name == graph.Input ? "the input" : graph.Initializers.ContainsKey(name) ? "a constant" : "not in the graph")}).");
            if (name == output) throw new ArgumentException($"'{name}' is the model's output, not a hidden value.");
            var shape = shapes[name];
            if (shape.Length is not (2 or 4) || shape[0] != OnnxShapes.Batch)
                throw new ArgumentException($"Cut point '{name}' has shape {OnnxShapes.Format(shape)}; a cut point is a feature map [N, C, H, W] or a vector [N, D].");
            if (!IsDominator(graph, consumers, name, output, out var bypass))
                throw new ArgumentException($"'{name}' is not a cut point of {graph.Name}: {bypass}, so the rest of the network does not depend on it alone.");
            result.Add((name, position[node]));
        }
        return result.OrderBy(r => r.Position).Select(r => r.Name).ToList();
    }

    /// <summary>The index of the first node of the head (global pooling, or the first node producing a rank-2 value from a rank-4 one); Count when none.</summary>
    private static int HeadStart(OnnxGraph graph, IReadOnlyDictionary<string, long[]> shapes)
    {
        for (var i = 0; i < graph.Nodes.Count; i++)
        {
            var node = graph.Nodes[i];
            if (node.OpType is "GlobalAveragePool" or "GlobalMaxPool") return i;
            if (node.OpType is "AveragePool" or "MaxPool" or "ReduceMean" && shapes.TryGetValue(node.Output[0], out var o) && o.Length == 4 && o[2] == 1 && o[3] == 1
                && shapes.TryGetValue(node.Input[0], out var x) && x[2] * x[3] > 1)
                return i;
        }
        return graph.Nodes.Count;
    }

    private static bool IsDominator(OnnxGraph graph, Dictionary<string, List<NodeProto>> consumers, string value, string output) =>
        IsDominator(graph, consumers, value, output, out _);

    /// <summary>Whether the output is unreachable from the input when <paramref name="value"/> is removed.</summary>
    private static bool IsDominator(OnnxGraph graph, Dictionary<string, List<NodeProto>> consumers, string value, string output, out string bypass)
    {
        bypass = "";
        var seen = new HashSet<string>(StringComparer.Ordinal) { graph.Input };
        var pending = new Stack<string>();
        pending.Push(graph.Input);
        while (pending.Count > 0)
        {
            var current = pending.Pop();
            if (!consumers.TryGetValue(current, out var readers)) continue;
            foreach (var reader in readers)
                foreach (var produced in reader.Output)
                {
                    if (produced.Length == 0 || produced == value || !seen.Add(produced)) continue;
                    if (produced == output)
                    {
                        bypass = $"{OnnxGraph.Describe(reader)} reaches the output on a path that does not pass through it";
                        return false;
                    }
                    pending.Push(produced);
                }
        }
        // The value must itself depend on the input (not on constants alone).
        if (ReachableFromInput(graph, value)) return true;
        bypass = "it is computed from constants alone";
        return false;
    }

    private static bool ReachableFromInput(OnnxGraph graph, string value)
    {
        var producers = graph.Producers();
        var pending = new Stack<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        pending.Push(value);
        while (pending.Count > 0)
        {
            var current = pending.Pop();
            if (current == graph.Input) return true;
            if (!seen.Add(current) || !producers.TryGetValue(current, out var node)) continue;
            foreach (var input in node.Input) if (input.Length > 0) pending.Push(input);
        }
        return false;
    }
}
