using Google.Protobuf;
using Onnx;

namespace Gati.MLNet.Onnx;

/// <summary>
/// Reads an .onnx file someone else wrote, defensively: a truncated or malformed protobuf, absurd dimensions, tensor
/// data that does not match its dimensions, and external data that points outside the model's own folder (or at a
/// range the file does not hold) are errors naming the file and what is wrong, never a crash, a huge allocation or a
/// read of another file.
/// </summary>
internal static class OnnxModelFile
{
    /// <summary>Largest .onnx file read (protobuf messages cannot exceed 2 GB).</summary>
    public const long MaxModelBytes = int.MaxValue;

    /// <summary>Most external data read for one model.</summary>
    public const long MaxExternalBytes = 8L << 30;

    /// <summary>Reads <paramref name="path"/> and resolves its external data (only inside its own folder).</summary>
    public static ModelProto Read(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new FileNotFoundException($"ONNX model not found: {path}", path);
        var length = new FileInfo(full).Length;
        if (length == 0) throw new InvalidDataException($"{path}: the file is empty, not an ONNX model.");
        if (length > MaxModelBytes) throw new InvalidDataException($"{path}: {length} bytes is larger than an ONNX protobuf can be (2 GB).");
        return Parse(File.ReadAllBytes(full), path, Path.GetDirectoryName(full));
    }

    /// <summary>Parses model bytes; external data is resolved relative to <paramref name="directory"/> (refused when null).</summary>
    public static ModelProto Parse(byte[] bytes, string what, string? directory)
    {
        ModelProto model;
        try
        {
            // The default recursion limit (100 nested messages) bounds hostile subgraph nesting.
            model = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw new InvalidDataException($"{what}: not a readable ONNX model (truncated or corrupt protobuf: {ex.Message}).", ex);
        }
        if (model.Graph is null || model.Graph.Node.Count == 0)
            throw new InvalidDataException($"{what}: not an ONNX model (it holds no graph nodes).");
        long external = 0;
        foreach (var tensor in AllTensors(model.Graph))
        {
            if (tensor.DataLocation == TensorProto.Types.DataLocation.External)
                external += ResolveExternal(tensor, what, directory, MaxExternalBytes - external);
            OnnxTensors.Validate(tensor, what);
        }
        return model;
    }

    /// <summary>Initializers and constant-node values of a graph and its subgraphs.</summary>
    private static IEnumerable<TensorProto> AllTensors(GraphProto graph)
    {
        foreach (var tensor in graph.Initializer) yield return tensor;
        foreach (var node in graph.Node)
            foreach (var attribute in node.Attribute)
            {
                if (attribute.T is { } t) yield return t;
                foreach (var each in attribute.Tensors) yield return each;
                if (attribute.G is { } g)
                    foreach (var inner in AllTensors(g)) yield return inner;
                foreach (var each in attribute.Graphs)
                    foreach (var inner in AllTensors(each)) yield return inner;
            }
    }

    /// <summary>Loads a tensor's external data into it; returns the bytes read.</summary>
    private static long ResolveExternal(TensorProto tensor, string what, string? directory, long budget)
    {
        var entries = tensor.ExternalData.ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
        if (!entries.TryGetValue("location", out var location) || string.IsNullOrWhiteSpace(location))
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' keeps its data externally but names no location.");
        if (directory is null)
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' keeps its data in '{location}', but the model was given as bytes, not as a file in a folder.");
        if (Path.IsPathRooted(location) || location.Split('/', '\\').Contains(".."))
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' points at external data '{location}' outside the model's folder; only files beside the model are read.");
        var root = Path.GetFullPath(directory) + Path.DirectorySeparatorChar;
        var file = Path.GetFullPath(Path.Combine(directory, location));
        if (!file.StartsWith(root, StringComparison.Ordinal))
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' points at external data '{location}' outside the model's folder.");
        if (!File.Exists(file)) throw new InvalidDataException($"{what}: the external data file '{location}' of tensor '{tensor.Name}' is missing.");
        // A link inside the folder could still lead outside it.
        if (new FileInfo(file).ResolveLinkTarget(returnFinalTarget: true) is { } target && !Path.GetFullPath(target.FullName).StartsWith(root, StringComparison.Ordinal))
            throw new InvalidDataException($"{what}: the external data file '{location}' of tensor '{tensor.Name}' is a link to a file outside the model's folder.");
        long offset = 0, length;
        if (entries.TryGetValue("offset", out var offsetText) && (!long.TryParse(offsetText, out offset) || offset < 0))
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' has external data offset '{offsetText}'.");
        var fileLength = new FileInfo(file).Length;
        var expected = OnnxTensors.ElementCount(tensor, what) * ElementBytes(tensor, what);
        if (entries.TryGetValue("length", out var lengthText))
        {
            if (!long.TryParse(lengthText, out length) || length < 0)
                throw new InvalidDataException($"{what}: tensor '{tensor.Name}' has external data length '{lengthText}'.");
        }
        else
        {
            length = expected;
        }
        if (length != expected)
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' declares {expected} bytes of data but its external data holds {length}.");
        if (offset > fileLength || length > fileLength - offset)
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' reads bytes {offset}..{offset + length} of '{location}', which has {fileLength}.");
        if (length > budget) throw new InvalidDataException($"{what}: its external data exceeds {MaxExternalBytes} bytes.");
        var data = new byte[length];
        using (var stream = File.OpenRead(file))
        {
            stream.Seek(offset, SeekOrigin.Begin);
            stream.ReadExactly(data);
        }
        tensor.RawData = ByteString.CopyFrom(data);
        tensor.DataLocation = TensorProto.Types.DataLocation.Default;
        tensor.ExternalData.Clear();
        return length;
    }

    private static long ElementBytes(TensorProto tensor, string what) => OnnxTensors.Type(tensor) switch
    {
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Int32 => 4,
        TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Int64 => 8,
        TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Int16 => 2,
        TensorProto.Types.DataType.Bool or TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Uint8 => 1,
        var type => throw new InvalidDataException($"{what}: tensor '{tensor.Name}' has element type {type}, which Gati does not import."),
    };

    /// <summary>
    /// The graph of a parsed model as an <see cref="OnnxGraph"/>: its one data input (initializers listed as inputs are
    /// weights), the given output (or its only one), its default-domain opset.
    /// </summary>
    public static OnnxGraph ToGraph(ModelProto model, string what, string? output = null)
    {
        var graph = model.Graph;
        var opset = model.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => (long?)o.Version).FirstOrDefault();
        if (opset is null)
            throw new InvalidDataException($"{what}: the model imports no default-domain (ai.onnx) opset.");
        foreach (var other in model.OpsetImport.Where(o => o.Domain is not ("" or "ai.onnx")))
            if (graph.Node.Any(n => n.Domain == other.Domain))
                throw new InvalidDataException($"{what}: the model uses operators of domain '{other.Domain}' ({graph.Node.First(n => n.Domain == other.Domain).OpType}), which Gati does not import.");
        if (opset < OnnxNormalizer.OldestOpset || opset > OnnxNormalizer.NewestOpset)
            throw new InvalidDataException($"{what}: opset {opset} is outside what Gati imports ({OnnxNormalizer.OldestOpset}-{OnnxNormalizer.NewestOpset}).");
        var initializers = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var tensor in graph.Initializer)
        {
            if (string.IsNullOrEmpty(tensor.Name)) throw new InvalidDataException($"{what}: an initializer has no name.");
            if (!initializers.TryAdd(tensor.Name, tensor)) throw new InvalidDataException($"{what}: initializer '{tensor.Name}' is defined twice.");
        }
        var inputs = graph.Input.Where(i => !initializers.ContainsKey(i.Name)).ToArray();
        if (inputs.Length != 1)
            throw new InvalidDataException($"{what}: Gati imports graphs with one input (an image batch); this one has {inputs.Length} ({string.Join(", ", inputs.Select(i => i.Name))}).");
        var input = inputs[0];
        if (input.Type?.TensorType is not { } tensorType || (TensorProto.Types.DataType)tensorType.ElemType != TensorProto.Types.DataType.Float)
            throw new InvalidDataException($"{what}: input '{input.Name}' is not a float tensor.");
        var dims = tensorType.Shape?.Dim.ToArray() ?? [];
        if (dims.Length != 4)
            throw new InvalidDataException($"{what}: input '{input.Name}' has {dims.Length} dimensions; Gati imports image models whose input is [N, C, H, W].");
        var shape = new long[4];
        shape[0] = OnnxShapes.Batch; // the batch dimension is made symbolic whatever the file says
        for (var i = 1; i < 4; i++)
        {
            var d = dims[i];
            if (d.ValueCase != TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue || d.DimValue < 1 || d.DimValue > 1 << 16)
                throw new InvalidDataException($"{what}: input '{input.Name}' dimension {i} is '{(d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : d.DimParam)}'; channels, height and width must be fixed sizes from 1 to 65536.");
            shape[i] = d.DimValue;
        }
        string chosen;
        if (output is not null)
        {
            if (graph.Output.All(o => o.Name != output) && graph.Node.All(n => !n.Output.Contains(output)))
                throw new InvalidDataException($"{what}: there is no output or value named '{output}' (outputs: {string.Join(", ", graph.Output.Select(o => o.Name))}).");
            chosen = output;
        }
        else
        {
            if (graph.Output.Count != 1)
                throw new InvalidDataException($"{what}: the graph has {graph.Output.Count} outputs ({string.Join(", ", graph.Output.Select(o => o.Name))}); name the one that holds the scores or features.");
            chosen = graph.Output[0].Name;
        }
        var metadata = model.MetadataProps.GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.Last().Value, StringComparer.Ordinal);
        var result = new OnnxGraph(what, graph.Node.Select(n => n.Clone()).ToList(), initializers, input.Name, shape, [chosen], (int)opset, metadata);
        foreach (var node in result.Nodes)
        {
            if (node.Domain is not ("" or "ai.onnx"))
                throw new InvalidDataException($"{what}: {OnnxGraph.Describe(node)} is in domain '{node.Domain}', which Gati does not import.");
        }
        return result;
    }
}
