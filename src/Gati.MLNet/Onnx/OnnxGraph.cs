using System.Globalization;
using Google.Protobuf;
using Onnx;

namespace Gati.MLNet.Onnx;

/// <summary>
/// A mutable view of one ONNX graph for the importer and the segmenter: its nodes in order, its initializers by name,
/// its one data input and its outputs, with producer and consumer indexes built on demand. Nothing here runs the
/// graph; <see cref="OnnxShapes"/> infers shapes, <see cref="OnnxNormalizer"/> rewrites old opsets.
/// </summary>
internal sealed class OnnxGraph
{
    public OnnxGraph(string name, List<NodeProto> nodes, Dictionary<string, TensorProto> initializers, string input, long[] inputShape,
        List<string> outputs, int opset, Dictionary<string, string>? metadata = null)
    {
        Name = name;
        Nodes = nodes;
        Initializers = initializers;
        Input = input;
        InputShape = inputShape;
        Outputs = outputs;
        Opset = opset;
        Metadata = metadata ?? new Dictionary<string, string>(StringComparer.Ordinal);
    }

    /// <summary>For messages: the file or component the graph came from.</summary>
    public string Name { get; set; }

    public List<NodeProto> Nodes { get; set; }

    public Dictionary<string, TensorProto> Initializers { get; }

    /// <summary>The one data input (initializers listed as inputs, as IR &lt; 4 graphs do, are not counted).</summary>
    public string Input { get; set; }

    /// <summary>The input's dimensions; <see cref="OnnxShapes.Batch"/> marks the batch dimension.</summary>
    public long[] InputShape { get; set; }

    public List<string> Outputs { get; }

    /// <summary>The default-domain opset the node semantics follow.</summary>
    public int Opset { get; set; }

    public Dictionary<string, string> Metadata { get; }

    /// <summary>How a node is named in messages: its name, else its op type and first output.</summary>
    public static string Describe(NodeProto node) =>
        string.IsNullOrEmpty(node.Name) ? $"{node.OpType} node producing '{node.Output.FirstOrDefault()}'" : $"{node.OpType} node '{node.Name}'";

    /// <summary>The node producing each value.</summary>
    public Dictionary<string, NodeProto> Producers()
    {
        var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var node in Nodes)
            foreach (var output in node.Output)
            {
                if (output.Length == 0) continue;
                if (!producers.TryAdd(output, node))
                    throw new InvalidDataException($"{Name}: value '{output}' is produced twice ({Describe(producers[output])} and {Describe(node)}).");
            }
        return producers;
    }

    /// <summary>The nodes reading each value (a node reading a value twice is listed twice).</summary>
    public Dictionary<string, List<NodeProto>> Consumers()
    {
        var consumers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        foreach (var node in Nodes)
            foreach (var input in node.Input)
            {
                if (input.Length == 0) continue;
                if (!consumers.TryGetValue(input, out var list)) consumers[input] = list = [];
                list.Add(node);
            }
        return consumers;
    }

    /// <summary>
    /// Puts the nodes in an order where every value is produced before it is read, and checks that every value read is
    /// produced, an initializer or the input. A cycle, or a value nobody defines, is an error naming the node.
    /// </summary>
    public void SortTopologically()
    {
        var producers = Producers();
        var state = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance); // 1 visiting, 2 done
        var order = new List<NodeProto>(Nodes.Count);
        foreach (var root in Nodes)
        {
            if (state.ContainsKey(root)) continue;
            // Iterative depth-first search: a hostile graph can be deep enough to overflow the stack of a recursive one.
            var stack = new Stack<(NodeProto Node, int Next)>();
            stack.Push((root, 0));
            state[root] = 1;
            while (stack.Count > 0)
            {
                var (node, next) = stack.Pop();
                if (next < node.Input.Count)
                {
                    stack.Push((node, next + 1));
                    var input = node.Input[next];
                    if (input.Length == 0 || input == Input || Initializers.ContainsKey(input)) continue;
                    if (!producers.TryGetValue(input, out var producer))
                        throw new InvalidDataException($"{Name}: {Describe(node)} reads '{input}', which no node, initializer or input defines.");
                    if (state.TryGetValue(producer, out var s))
                    {
                        if (s == 1) throw new InvalidDataException($"{Name}: the graph has a cycle through {Describe(producer)}: a value depends on itself.");
                        continue;
                    }
                    state[producer] = 1;
                    stack.Push((producer, 0));
                }
                else
                {
                    state[node] = 2;
                    order.Add(node);
                }
            }
        }
        Nodes = order;
        foreach (var output in Outputs)
            if (output != Input && !producers.ContainsKey(output) && !Initializers.ContainsKey(output))
                throw new InvalidDataException($"{Name}: output '{output}' is not produced by any node.");
    }

    /// <summary>Drops nodes and initializers that no output depends on.</summary>
    public void RemoveUnused()
    {
        var producers = Producers();
        var needed = new HashSet<string>(Outputs, StringComparer.Ordinal);
        var keep = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<string>(Outputs);
        while (pending.Count > 0)
        {
            var value = pending.Pop();
            if (!producers.TryGetValue(value, out var node) || !keep.Add(node)) continue;
            foreach (var input in node.Input)
                if (input.Length > 0 && needed.Add(input)) pending.Push(input);
            foreach (var attribute in node.Attribute)
                if (attribute.G is { } g)
                    foreach (var outer in SubgraphReads(g))
                        if (needed.Add(outer)) pending.Push(outer);
        }
        Nodes = Nodes.Where(keep.Contains).ToList();
        foreach (var name in Initializers.Keys.Where(n => !needed.Contains(n)).ToList()) Initializers.Remove(name);
    }

    /// <summary>Values a subgraph reads that it does not define itself (outer-scope reads).</summary>
    private static IEnumerable<string> SubgraphReads(GraphProto graph)
    {
        var defined = new HashSet<string>(graph.Initializer.Select(i => i.Name).Concat(graph.Input.Select(i => i.Name)), StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            foreach (var input in node.Input)
                if (input.Length > 0 && !defined.Contains(input)) yield return input;
            foreach (var output in node.Output) defined.Add(output);
        }
    }

    /// <summary>Replaces every read of <paramref name="from"/> by <paramref name="to"/> (nodes and outputs).</summary>
    public void ReplaceReads(string from, string to)
    {
        foreach (var node in Nodes)
            for (var i = 0; i < node.Input.Count; i++)
                if (node.Input[i] == from) node.Input[i] = to;
        for (var i = 0; i < Outputs.Count; i++)
            if (Outputs[i] == from) Outputs[i] = to;
    }

    /// <summary>The graph as a standalone model (opset <see cref="OnnxGraphBuilder.Opset"/> once normalised), with the given output shapes.</summary>
    public ModelProto ToModel(IReadOnlyDictionary<string, long[]> shapes)
    {
        var graph = new GraphProto { Name = Name };
        graph.Node.AddRange(Nodes);
        graph.Initializer.AddRange(Initializers.Values);
        graph.Input.Add(OnnxGraphBuilder.ValueInfo(Input, TensorProto.Types.DataType.Float, InputShape));
        foreach (var output in Outputs)
            graph.Output.Add(OnnxGraphBuilder.ValueInfo(output, TensorProto.Types.DataType.Float, shapes.TryGetValue(output, out var s) ? s : null));
        return OnnxGraphBuilder.Model(graph, Opset, Metadata);
    }

    /// <summary>A deep copy (nodes are rewritten in place by the normalizer; initializers' data is shared, it is immutable).</summary>
    public OnnxGraph Clone() =>
        new(Name, Nodes.Select(n => n.Clone()).ToList(), new Dictionary<string, TensorProto>(Initializers, StringComparer.Ordinal), Input, (long[])InputShape.Clone(),
            [.. Outputs], Opset, new Dictionary<string, string>(Metadata, StringComparer.Ordinal));

    // ---- attribute helpers -------------------------------------------------------------------------------------

    public static AttributeProto? Attribute(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);

    public static long Int(NodeProto node, string name, long fallback) => Attribute(node, name) is { } a ? a.I : fallback;

    public static float Float(NodeProto node, string name, float fallback) => Attribute(node, name) is { } a ? a.F : fallback;

    public static long[]? Ints(NodeProto node, string name) => Attribute(node, name) is { } a ? a.Ints.ToArray() : null;

    public static string? String(NodeProto node, string name) => Attribute(node, name) is { } a ? a.S.ToStringUtf8() : null;

    public static void SetInts(NodeProto node, string name, long[] values)
    {
        RemoveAttribute(node, name);
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        node.Attribute.Add(attribute);
    }

    public static void SetInt(NodeProto node, string name, long value)
    {
        RemoveAttribute(node, name);
        node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });
    }

    public static void RemoveAttribute(NodeProto node, string name)
    {
        for (var i = node.Attribute.Count - 1; i >= 0; i--)
            if (node.Attribute[i].Name == name) node.Attribute.RemoveAt(i);
    }

    /// <summary>A new name not used by any value, initializer or node of this graph.</summary>
    public string UniqueName(string stem)
    {
        var taken = new HashSet<string>(Initializers.Keys, StringComparer.Ordinal) { Input };
        foreach (var node in Nodes)
        {
            foreach (var output in node.Output) taken.Add(output);
            taken.Add(node.Name);
        }
        var name = stem;
        for (var i = 1; taken.Contains(name); i++) name = string.Create(CultureInfo.InvariantCulture, $"{stem}_{i}");
        return name;
    }

    public string AddFloatInitializer(string stem, float[] values, params long[] dims)
    {
        var name = UniqueName(stem);
        Initializers[name] = OnnxTensors.Float(name, values, dims);
        return name;
    }

    public string AddInt64Initializer(string stem, long[] values, params long[] dims)
    {
        var name = UniqueName(stem);
        Initializers[name] = OnnxTensors.Int64(name, values, dims);
        return name;
    }

    public static NodeProto NewNode(string opType, string name, IEnumerable<string> inputs, IEnumerable<string> outputs)
    {
        var node = new NodeProto { OpType = opType, Name = name };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        return node;
    }

    /// <summary>Raw little-endian bytes of float values.</summary>
    public static ByteString FloatBytes(ReadOnlySpan<float> values) =>
        ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));
}
