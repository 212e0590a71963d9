using System.Globalization;
using Google.Protobuf;
using Onnx;

namespace Gati.MLNet.Onnx;

/// <summary>
/// Builds one ONNX graph (opset <see cref="Opset"/>): weights as raw little-endian initializers, nodes with unique
/// value names, inputs and outputs with a symbolic batch dimension. The exporters of the ResNet, the predictors and
/// the selectors write into it; <see cref="ToBytes"/> gives a standard .onnx model.
/// </summary>
internal sealed class OnnxGraphBuilder
{
    /// <summary>The default-domain opset written (ONNX 1.12+; ONNX Runtime 1.12+).</summary>
    public const int Opset = 17;

    /// <summary>The symbolic batch dimension of every input and output.</summary>
    public const string BatchDimension = "N";

    private readonly GraphProto _graph;
    private readonly NameScope _scope;

    public OnnxGraphBuilder(string name)
        : this(name, new NameScope())
    {
    }

    private OnnxGraphBuilder(string name, NameScope scope)
    {
        _graph = new GraphProto { Name = name };
        _scope = scope;
    }

    /// <summary>
    /// A subgraph (the branch of an <c>If</c> node) whose nodes may read this graph's values by name: it shares this
    /// graph's value names, which ONNX requires to be unique across a graph and the subgraphs nested in it.
    /// </summary>
    public OnnxGraphBuilder Branch(string name) => new(name, _scope);

    /// <summary>The graph built so far (the value of a subgraph attribute).</summary>
    public GraphProto Graph => _graph;

    /// <summary>A float32 initializer named after <paramref name="name"/> (made unique).</summary>
    public string Constant(string name, ReadOnlySpan<float> values, params long[] dims)
    {
        if (values.Length != dims.Aggregate(1L, (a, b) => a * b))
            throw new ArgumentException($"Initializer '{name}': {values.Length} values for shape [{string.Join(", ", dims)}].");
        var unique = Unique(name);
        var bytes = new byte[values.Length * sizeof(float)];
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(bytes);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("ONNX raw data is little-endian.");
        var tensor = new TensorProto { Name = unique, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(bytes) };
        tensor.Dims.AddRange(dims);
        _graph.Initializer.Add(tensor);
        return unique;
    }

    /// <summary>An int64 initializer (shapes, axes, indices).</summary>
    public string Int64Constant(string name, ReadOnlySpan<long> values, params long[] dims)
    {
        var unique = Unique(name);
        var tensor = new TensorProto { Name = unique, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.AddRange(dims);
        foreach (var v in values) tensor.Int64Data.Add(v);
        _graph.Initializer.Add(tensor);
        return unique;
    }

    /// <summary>Adds a node with one output and returns the output's name.</summary>
    public string Node(string opType, IReadOnlyList<string> inputs, params (string Name, object Value)[] attributes) =>
        Node(opType, inputs, 1, attributes)[0];

    /// <summary>Adds a node whose one output is named <paramref name="output"/> exactly (a value other graphs refer to by name).</summary>
    public string NodeNamed(string opType, IReadOnlyList<string> inputs, string output, params (string Name, object Value)[] attributes)
    {
        if (!_scope.Names.Add(output)) throw new InvalidOperationException($"The ONNX value name '{output}' is taken.");
        var node = new NodeProto { OpType = opType, Name = Unique(opType.ToLowerInvariant()) };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        foreach (var (name, value) in attributes) node.Attribute.Add(Attribute(name, value));
        _graph.Node.Add(node);
        return output;
    }

    /// <summary>Adds a node with <paramref name="outputs"/> outputs and returns their names.</summary>
    public string[] Node(string opType, IReadOnlyList<string> inputs, int outputs, params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = Unique(opType.ToLowerInvariant()) };
        node.Input.AddRange(inputs);
        var names = Enumerable.Range(0, outputs).Select(i => Unique($"{node.Name}_out{i}")).ToArray();
        node.Output.AddRange(names);
        foreach (var (name, value) in attributes) node.Attribute.Add(Attribute(name, value));
        _graph.Node.Add(node);
        return names;
    }

    /// <summary>
    /// Copies <paramref name="nodes"/> (in order) of another graph into this one: values they read are taken from
    /// <paramref name="bindings"/> (source name → name here), from the nodes copied before them, or from
    /// <paramref name="initializers"/> (each copied once per graph, data shared); every value they produce gets a new
    /// unique name starting with <paramref name="prefix"/>. Returns the names here of every value produced.
    /// </summary>
    public Dictionary<string, string> Append(IEnumerable<NodeProto> nodes, IReadOnlyDictionary<string, TensorProto> initializers,
        IReadOnlyDictionary<string, string> bindings, string prefix)
    {
        var names = new Dictionary<string, string>(bindings, StringComparer.Ordinal);
        foreach (var source in nodes)
        {
            var node = new NodeProto { OpType = source.OpType, Domain = source.Domain, Name = Unique(prefix + (source.Name.Length > 0 ? source.Name : source.OpType.ToLowerInvariant())) };
            foreach (var input in source.Input)
            {
                if (input.Length == 0)
                {
                    node.Input.Add("");
                }
                else if (names.TryGetValue(input, out var mapped))
                {
                    node.Input.Add(mapped);
                }
                else if (initializers.TryGetValue(input, out var tensor))
                {
                    var key = (initializers, input);
                    if (!_imported.TryGetValue(key, out var copied))
                    {
                        copied = Unique(prefix + input);
                        _graph.Initializer.Add(OnnxTensors.Renamed(tensor, copied));
                        _imported[key] = copied;
                    }
                    node.Input.Add(copied);
                }
                else
                {
                    throw new InvalidOperationException($"Copying {OnnxGraph.Describe(source)}: '{input}' is neither bound, produced by an earlier node nor a constant.");
                }
            }
            foreach (var output in source.Output)
            {
                if (output.Length == 0)
                {
                    node.Output.Add("");
                    continue;
                }
                var renamed = Unique(prefix + output);
                names[output] = renamed;
                node.Output.Add(renamed);
            }
            node.Attribute.AddRange(source.Attribute.Select(a => a.Clone()));
            _graph.Node.Add(node);
        }
        return names;
    }

    private readonly Dictionary<(object Source, string Name), string> _imported = new();

    /// <summary>Renames the value <paramref name="value"/> to <paramref name="name"/> by an Identity node (graph outputs keep stable names).</summary>
    public string Rename(string value, string name)
    {
        if (!_scope.Names.Add(name)) throw new InvalidOperationException($"The ONNX value name '{name}' is taken.");
        var node = new NodeProto { OpType = "Identity", Name = Unique("identity") };
        node.Input.Add(value);
        node.Output.Add(name);
        _graph.Node.Add(node);
        return name;
    }

    /// <summary>Declares a graph input; dimensions given as null are the batch dimension.</summary>
    public string Input(string name, TensorProto.Types.DataType type, params long?[] dims)
    {
        if (!_scope.Names.Add(name)) throw new InvalidOperationException($"The ONNX value name '{name}' is taken.");
        _graph.Input.Add(ValueInfo(name, type, dims));
        return name;
    }

    /// <summary>Declares a graph output (the value must already exist under this name).</summary>
    public void Output(string name, TensorProto.Types.DataType type, params long?[] dims) => _graph.Output.Add(ValueInfo(name, type, dims));

    /// <summary>Declares a graph output whose shape is left open (an <c>If</c> branch's, which may be empty in the other branch).</summary>
    public void OutputOfAnyShape(string name, TensorProto.Types.DataType type) => _graph.Output.Add(ValueInfo(name, type, (long[]?)null));

    /// <summary>The model, with producer information and metadata.</summary>
    public ModelProto ToModel(IReadOnlyDictionary<string, string>? metadata = null) => Model(_graph, Opset, metadata ?? new Dictionary<string, string>());

    /// <summary>A graph as a model of <paramref name="opset"/>, with producer information and metadata (one definition for every graph Gati writes).</summary>
    public static ModelProto Model(GraphProto graph, int opset, IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var model = new ModelProto
        {
            IrVersion = 8,
            ProducerName = "Gati.MLNet",
            ProducerVersion = typeof(OnnxGraphBuilder).Assembly.GetName().Version?.ToString() ?? "",
            Graph = graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        foreach (var (key, value) in metadata)
            model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        return model;
    }

    public byte[] ToBytes(IReadOnlyDictionary<string, string>? metadata = null) => ToModel(metadata).ToByteArray();

    private string Unique(string stem)
    {
        var name = stem;
        while (!_scope.Names.Add(name)) name = string.Create(CultureInfo.InvariantCulture, $"{stem}_{++_scope.Counter}");
        return name;
    }

    /// <summary>The value names of a model, shared by its main graph and every subgraph.</summary>
    private sealed class NameScope
    {
        public HashSet<string> Names { get; } = new(StringComparer.Ordinal);

        public int Counter;
    }

    // null marks the batch dimension here.
    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, long?[] dims) =>
        ValueInfo(name, type, dims.Select(d => d ?? OnnxShapes.Batch).ToArray());

    /// <summary>A tensor value's declaration: <paramref name="dims"/> null leaves the shape unknown; <see cref="OnnxShapes.Batch"/> is the symbolic batch dimension.</summary>
    public static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, long[]? dims)
    {
        var info = new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type } } };
        if (dims is not null)
        {
            var shape = new TensorShapeProto();
            foreach (var d in dims)
                shape.Dim.Add(d == OnnxShapes.Batch ? new TensorShapeProto.Types.Dimension { DimParam = BatchDimension } : new TensorShapeProto.Types.Dimension { DimValue = d });
            info.Type.TensorType.Shape = shape;
        }
        return info;
    }

    private static AttributeProto Attribute(string name, object value)
    {
        var attribute = new AttributeProto { Name = name };
        switch (value)
        {
            case int i:
                attribute.Type = AttributeProto.Types.AttributeType.Int;
                attribute.I = i;
                break;
            case long l:
                attribute.Type = AttributeProto.Types.AttributeType.Int;
                attribute.I = l;
                break;
            case float f:
                attribute.Type = AttributeProto.Types.AttributeType.Float;
                attribute.F = f;
                break;
            case long[] ints:
                attribute.Type = AttributeProto.Types.AttributeType.Ints;
                attribute.Ints.AddRange(ints);
                break;
            case string s:
                attribute.Type = AttributeProto.Types.AttributeType.String;
                attribute.S = ByteString.CopyFromUtf8(s);
                break;
            case GraphProto g:
                attribute.Type = AttributeProto.Types.AttributeType.Graph;
                attribute.G = g;
                break;
            default:
                throw new ArgumentException($"Unsupported ONNX attribute value {value.GetType().Name} for '{name}'.");
        }
        return attribute;
    }
}
