using Onnx;

namespace Gati.MLNet.Onnx;

/// <summary>
/// Static shape inference for the operators Gati imports (opset 17 semantics, after <see cref="OnnxNormalizer"/>),
/// with a symbolic batch dimension: <see cref="Batch"/> marks it, and it must stay the first dimension of every value
/// computed from the input (what lets a segment run on any number of rows and drop rows between segments). A shape
/// that does not resolve, a batch that moves to another axis or an operator outside the supported set is an error
/// naming the node.
/// </summary>
internal static class OnnxShapes
{
    /// <summary>The symbolic batch dimension.</summary>
    public const long Batch = -1;

    /// <summary>Largest value accepted, in elements per row.</summary>
    public const long MaxValuesPerRow = 1L << 31;

    /// <summary>Operators this inference (and so the importer) supports.</summary>
    public static readonly IReadOnlySet<string> Supported = new HashSet<string>(StringComparer.Ordinal)
    {
        "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Exp",
        "Log", "Sqrt", "Neg", "Abs", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Concat", "Split", "Flatten", "Reshape", "Gemm", "MatMul",
        "Softmax", "LogSoftmax", "Transpose", "Squeeze", "Unsqueeze", "ReduceMean", "ReduceSum", "Pad", "Identity", "Gather",
        "GreaterOrEqual", "Greater", "TopK", "If", "BatchNormalization",
    };

    public static string Format(long[]? shape) =>
        shape is null ? "?" : "[" + string.Join(", ", shape.Select(d => d == Batch ? "N" : d.ToString(System.Globalization.CultureInfo.InvariantCulture))) + "]";

    /// <summary>Shapes of every value of a sorted, normalised graph (initializers included).</summary>
    public static Dictionary<string, long[]> Infer(OnnxGraph graph)
    {
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal) { [graph.Input] = graph.InputShape };
        foreach (var (name, tensor) in graph.Initializers) shapes[name] = tensor.Dims.ToArray();
        foreach (var node in graph.Nodes) InferNode(graph, node, shapes);
        return shapes;
    }

    /// <summary>Infers the outputs of one node from the shapes of its inputs (already in <paramref name="shapes"/>).</summary>
    public static void InferNode(OnnxGraph graph, NodeProto node, Dictionary<string, long[]> shapes)
    {
        var what = $"{graph.Name}: {OnnxGraph.Describe(node)}";
        long[] In(int i)
        {
            if (i >= node.Input.Count || node.Input[i].Length == 0) throw new InvalidDataException($"{what} lacks input {i}.");
            return shapes.TryGetValue(node.Input[i], out var s) ? s : throw new InvalidDataException($"{what} reads '{node.Input[i]}', whose shape is unknown.");
        }
        long[] Const(int i)
        {
            if (i >= node.Input.Count || node.Input[i].Length == 0) throw new InvalidDataException($"{what} lacks input {i}.");
            return graph.Initializers.TryGetValue(node.Input[i], out var t)
                ? OnnxTensors.Int64s(t, graph.Name)
                : throw new InvalidDataException($"{what}: its input '{node.Input[i]}' must be a constant for Gati to know the output's shape.");
        }
        long[] result;
        switch (node.OpType)
        {
            case "Conv":
                result = Convolution(what, node, In(0), In(1));
                break;
            case "MaxPool" or "AveragePool":
                result = Pool(what, node, In(0));
                break;
            case "GlobalAveragePool" or "GlobalMaxPool":
            {
                var x = In(0);
                if (x.Length < 3) throw new InvalidDataException($"{what}: input {Format(x)} has no spatial dimensions.");
                result = [.. x.Take(2), .. Enumerable.Repeat(1L, x.Length - 2)];
                break;
            }
            case "Relu" or "LeakyRelu" or "Sigmoid" or "Tanh" or "Clip" or "Exp" or "Log" or "Sqrt" or "Neg" or "Abs" or "Identity" or "Softmax" or "LogSoftmax":
                result = In(0);
                break;
            case "BatchNormalization":
                result = In(0);
                break;
            case "Add" or "Sub" or "Mul" or "Div" or "Sum" or "Max" or "Min" or "GreaterOrEqual" or "Greater":
                result = In(0);
                for (var i = 1; i < node.Input.Count; i++) result = Broadcast(what, result, In(i));
                break;
            case "Concat":
            {
                var first = In(0);
                var axis = Axis(what, OnnxGraph.Int(node, "axis", long.MinValue), first.Length);
                if (axis == 0 && first[0] == Batch) throw new InvalidDataException($"{what} concatenates along the batch dimension.");
                result = (long[])first.Clone();
                for (var i = 1; i < node.Input.Count; i++)
                {
                    var next = In(i);
                    if (next.Length != first.Length) throw new InvalidDataException($"{what}: inputs {Format(first)} and {Format(next)} differ in rank.");
                    for (var d = 0; d < first.Length; d++)
                        if (d != axis && next[d] != first[d]) throw new InvalidDataException($"{what}: inputs {Format(first)} and {Format(next)} differ outside axis {axis}.");
                    result[axis] += next[axis];
                }
                break;
            }
            case "Split":
            {
                var x = In(0);
                var axis = Axis(what, OnnxGraph.Int(node, "axis", 0), x.Length);
                if (x[axis] == Batch) throw new InvalidDataException($"{what} splits the batch dimension.");
                long[] sizes = node.Input.Count > 1 && node.Input[1].Length > 0 ? Const(1) : EvenSplit(what, x[axis], node.Output.Count);
                if (sizes.Length != node.Output.Count || sizes.Sum() != x[axis] || sizes.Any(s => s < 0))
                    throw new InvalidDataException($"{what}: split sizes [{string.Join(", ", sizes)}] do not divide axis {axis} of {Format(x)} into {node.Output.Count} outputs.");
                for (var i = 0; i < node.Output.Count; i++)
                {
                    var part = (long[])x.Clone();
                    part[axis] = sizes[i];
                    Set(node.Output[i], part);
                }
                return;
            }
            case "Flatten":
            {
                var x = In(0);
                var axis = (int)Axis(what, OnnxGraph.Int(node, "axis", 1), x.Length + 1);
                if (axis == 0) throw new InvalidDataException($"{what} flattens the batch dimension into the features.");
                result = [Product(what, x[..axis]), Product(what, x[axis..])];
                break;
            }
            case "Reshape":
                result = Reshape(what, In(0), Const(1), OnnxGraph.Int(node, "allowzero", 0) != 0);
                break;
            case "Gemm":
            {
                var a = In(0);
                var b = In(1);
                if (a.Length != 2 || b.Length != 2) throw new InvalidDataException($"{what}: Gemm multiplies matrices; got {Format(a)} and {Format(b)}.");
                var transA = OnnxGraph.Int(node, "transA", 0) != 0;
                var transB = OnnxGraph.Int(node, "transB", 0) != 0;
                if (transA) throw new InvalidDataException($"{what}: transA = 1 would move the batch dimension.");
                var k = b[transB ? 1 : 0];
                if (a[1] != k) throw new InvalidDataException($"{what}: {Format(a)} times {Format(b)}{(transB ? "ᵀ" : "")} does not line up.");
                result = [a[0], b[transB ? 0 : 1]];
                if (node.Input.Count > 2 && node.Input[2].Length > 0) Broadcast(what, result, In(2));
                break;
            }
            case "MatMul":
            {
                var a = In(0);
                var b = In(1);
                if (a.Length < 2 || b.Length != 2) throw new InvalidDataException($"{what}: Gati imports MatMul of [..., M, K] by a [K, N] matrix; got {Format(a)} and {Format(b)}.");
                if (a[^1] != b[0]) throw new InvalidDataException($"{what}: {Format(a)} times {Format(b)} does not line up.");
                result = [.. a[..^1], b[1]];
                break;
            }
            case "Transpose":
            {
                var x = In(0);
                var perm = OnnxGraph.Ints(node, "perm") ?? Enumerable.Range(0, x.Length).Reverse().Select(i => (long)i).ToArray();
                if (perm.Length != x.Length || perm.Order().Select((p, i) => p == i).Any(ok => !ok))
                    throw new InvalidDataException($"{what}: perm [{string.Join(", ", perm)}] is not a permutation of {x.Length} axes.");
                if (x[0] == Batch && perm[0] != 0) throw new InvalidDataException($"{what} moves the batch dimension.");
                result = perm.Select(p => x[p]).ToArray();
                break;
            }
            case "Squeeze":
            {
                var x = In(0);
                var axes = node.Input.Count > 1 && node.Input[1].Length > 0
                    ? Const(1).Select(a => Axis(what, a, x.Length)).ToHashSet()
                    : Enumerable.Range(0, x.Length).Where(i => x[i] == 1).Select(i => (long)i).ToHashSet();
                foreach (var a in axes)
                    if (x[a] != 1) throw new InvalidDataException($"{what} squeezes axis {a} of {Format(x)}, which is not 1.");
                result = x.Where((_, i) => !axes.Contains(i)).ToArray();
                break;
            }
            case "Unsqueeze":
            {
                var x = In(0);
                var rank = x.Length + Const(1).Length;
                var axes = Const(1).Select(a => Axis(what, a, rank)).ToHashSet();
                if (axes.Contains(0) && x.Length > 0 && x[0] == Batch) throw new InvalidDataException($"{what} inserts an axis before the batch dimension.");
                var list = new List<long>(rank);
                var source = 0;
                for (var i = 0; i < rank; i++) list.Add(axes.Contains(i) ? 1 : x[source++]);
                result = list.ToArray();
                break;
            }
            case "ReduceMean" or "ReduceSum":
            {
                var x = In(0);
                var axesList = node.OpType == "ReduceSum" && node.Input.Count > 1 && node.Input[1].Length > 0 ? Const(1) : OnnxGraph.Ints(node, "axes");
                var axes = (axesList ?? Enumerable.Range(0, x.Length).Select(i => (long)i).ToArray()).Select(a => Axis(what, a, x.Length)).ToHashSet();
                if (axes.Contains(0) && x[0] == Batch) throw new InvalidDataException($"{what} reduces over the batch dimension.");
                var keep = OnnxGraph.Int(node, "keepdims", 1) != 0;
                result = keep ? x.Select((d, i) => axes.Contains(i) ? 1 : d).ToArray() : x.Where((_, i) => !axes.Contains(i)).ToArray();
                break;
            }
            case "Pad":
            {
                var x = In(0);
                var pads = Const(1);
                if (pads.Length != 2 * x.Length) throw new InvalidDataException($"{what}: {pads.Length} pads for rank {x.Length}.");
                if (x[0] == Batch && (pads[0] != 0 || pads[x.Length] != 0)) throw new InvalidDataException($"{what} pads the batch dimension.");
                result = x.Select((d, i) => d == Batch ? Batch : d + pads[i] + pads[i + x.Length]).ToArray();
                if (result.Any(d => d != Batch && d < 0)) throw new InvalidDataException($"{what}: negative size after padding {Format(x)}.");
                break;
            }
            case "Gather":
            {
                var x = In(0);
                var indices = In(1);
                var axis = Axis(what, OnnxGraph.Int(node, "axis", 0), x.Length);
                if (axis == 0 && x[0] == Batch) throw new InvalidDataException($"{what} gathers along the batch dimension.");
                result = [.. x[..(int)axis], .. indices, .. x[(int)(axis + 1)..]];
                break;
            }
            case "TopK":
            {
                var x = In(0);
                var k = Const(1);
                var axis = Axis(what, OnnxGraph.Int(node, "axis", -1), x.Length);
                var shape = (long[])x.Clone();
                shape[axis] = k[0];
                Set(node.Output[0], shape);
                if (node.Output.Count > 1) Set(node.Output[1], shape);
                return;
            }
            default:
                throw new InvalidDataException($"{what}: operator {node.OpType} is not one Gati imports (supported: {string.Join(", ", Supported.Order(StringComparer.Ordinal))}).");
        }
        Set(node.Output[0], result);

        void Set(string name, long[] shape)
        {
            long perRow = 1;
            foreach (var d in shape)
            {
                if (d == Batch) continue;
                if (d < 0) throw new InvalidDataException($"{what}: output '{name}' would have shape {Format(shape)}.");
                if (d > 0 && perRow > MaxValuesPerRow / d) throw new InvalidDataException($"{what}: output '{name}' {Format(shape)} is absurdly large.");
                perRow *= d;
            }
            for (var i = 1; i < shape.Length; i++)
                if (shape[i] == Batch) throw new InvalidDataException($"{what}: output '{name}' {Format(shape)} carries the batch dimension on axis {i}, not 0.");
            shapes[name] = shape;
        }
    }

    private static long[] EvenSplit(string what, long size, int parts)
    {
        if (parts < 1 || size % parts != 0) throw new InvalidDataException($"{what}: {size} does not split evenly into {parts}.");
        return Enumerable.Repeat(size / parts, parts).ToArray();
    }

    private static long Axis(string what, long axis, long rank)
    {
        if (axis == long.MinValue) throw new InvalidDataException($"{what} has no axis attribute.");
        var a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= rank) throw new InvalidDataException($"{what}: axis {axis} is out of range for rank {rank}.");
        return a;
    }

    private static long Product(string what, long[] dims)
    {
        if (dims.Contains(Batch))
        {
            if (dims.Length == 1) return Batch;
            throw new InvalidDataException($"{what} merges the batch dimension with others.");
        }
        return dims.Aggregate(1L, (a, b) => a * b);
    }

    /// <summary>Numpy broadcasting; the batch dimension broadcasts with 1 and with itself only.</summary>
    public static long[] Broadcast(string what, long[] a, long[] b)
    {
        var rank = Math.Max(a.Length, b.Length);
        var result = new long[rank];
        for (var i = 0; i < rank; i++)
        {
            var x = i - (rank - a.Length) >= 0 ? a[i - (rank - a.Length)] : 1;
            var y = i - (rank - b.Length) >= 0 ? b[i - (rank - b.Length)] : 1;
            if (x == y || y == 1) result[i] = x;
            else if (x == 1) result[i] = y;
            else throw new InvalidDataException($"{what}: shapes {Format(a)} and {Format(b)} do not broadcast.");
        }
        return result;
    }

    private static long[] Reshape(string what, long[] x, long[] target, bool allowZero)
    {
        var result = new long[target.Length];
        var inferred = -1;
        for (var i = 0; i < target.Length; i++)
        {
            if (target[i] == 0 && !allowZero)
            {
                if (i >= x.Length) throw new InvalidDataException($"{what}: target shape [{string.Join(", ", target)}] copies axis {i}, which {Format(x)} lacks.");
                result[i] = x[i];
            }
            else if (target[i] == -1)
            {
                if (inferred >= 0) throw new InvalidDataException($"{what}: target shape [{string.Join(", ", target)}] has two -1s.");
                inferred = i;
            }
            else if (target[i] < 0)
            {
                throw new InvalidDataException($"{what}: target shape [{string.Join(", ", target)}] has a negative size.");
            }
            else
            {
                result[i] = target[i];
            }
        }
        var batchIn = x.Length > 0 && x[0] == Batch;
        var inRow = x.Where(d => d != Batch).Aggregate(1L, (a, b) => a * b);
        if (batchIn)
        {
            // The batch must survive as the first dimension: copied (0), or inferred (-1) with every other size fixed.
            if (result.Length == 0 || (result[0] != Batch && inferred != 0))
                throw new InvalidDataException($"{what}: target shape [{string.Join(", ", target)}] does not keep the batch as its first dimension (write 0 or -1 there).");
            if (inferred == 0) result[0] = Batch;
            var outRow = result.Skip(1).Where((_, i) => i + 1 != inferred).Aggregate(1L, (a, b) => a * b);
            if (inferred > 0)
            {
                if (outRow == 0 || inRow % outRow != 0) throw new InvalidDataException($"{what}: {Format(x)} cannot be reshaped to [{string.Join(", ", target)}].");
                result[inferred] = inRow / outRow;
            }
            else if (outRow != inRow)
            {
                throw new InvalidDataException($"{what}: {Format(x)} ({inRow} values per row) cannot be reshaped to [{string.Join(", ", target)}].");
            }
        }
        else
        {
            var outKnown = result.Where((_, i) => i != inferred).Aggregate(1L, (a, b) => a * b);
            if (inferred >= 0)
            {
                if (outKnown == 0 || inRow % outKnown != 0) throw new InvalidDataException($"{what}: {Format(x)} cannot be reshaped to [{string.Join(", ", target)}].");
                result[inferred] = inRow / outKnown;
            }
            else if (outKnown != inRow)
            {
                throw new InvalidDataException($"{what}: {Format(x)} cannot be reshaped to [{string.Join(", ", target)}].");
            }
        }
        return result;
    }

    private static long[] Convolution(string what, NodeProto node, long[] x, long[] w)
    {
        if (x.Length != 4 || w.Length != 4) throw new InvalidDataException($"{what}: Gati imports 2-D convolutions ([N, C, H, W] by [M, C/g, kH, kW]); got {Format(x)} and {Format(w)}.");
        var group = OnnxGraph.Int(node, "group", 1);
        if (group < 1 || x[1] % group != 0 || w[1] * group != x[1])
            throw new InvalidDataException($"{what}: {x[1]} input channels, weights {Format(w)}, group {group} do not fit.");
        var kernel = OnnxGraph.Ints(node, "kernel_shape") ?? [w[2], w[3]];
        if (kernel.Length != 2 || kernel[0] != w[2] || kernel[1] != w[3]) throw new InvalidDataException($"{what}: kernel_shape [{string.Join(", ", kernel)}] does not match weights {Format(w)}.");
        var spatial = Spatial(what, node, x, kernel);
        return [x[0], w[0], spatial[0], spatial[1]];
    }

    private static long[] Pool(string what, NodeProto node, long[] x)
    {
        if (x.Length != 4) throw new InvalidDataException($"{what}: Gati imports 2-D pooling of [N, C, H, W]; got {Format(x)}.");
        var kernel = OnnxGraph.Ints(node, "kernel_shape") ?? throw new InvalidDataException($"{what} has no kernel_shape.");
        if (kernel.Length != 2) throw new InvalidDataException($"{what}: kernel_shape [{string.Join(", ", kernel)}] is not 2-D.");
        var spatial = Spatial(what, node, x, kernel);
        return [x[0], x[1], spatial[0], spatial[1]];
    }

    /// <summary>Output height and width of a sliding window (convolution or pooling), with ONNX's pads, strides, dilations, ceil_mode and auto_pad.</summary>
    private static long[] Spatial(string what, NodeProto node, long[] x, long[] kernel)
    {
        var strides = OnnxGraph.Ints(node, "strides") ?? [1, 1];
        var dilations = OnnxGraph.Ints(node, "dilations") ?? [1, 1];
        var pads = OnnxGraph.Ints(node, "pads") ?? [0, 0, 0, 0];
        var autoPad = OnnxGraph.String(node, "auto_pad") ?? "NOTSET";
        var ceil = OnnxGraph.Int(node, "ceil_mode", 0) != 0;
        if (strides.Length != 2 || dilations.Length != 2 || pads.Length != 4 || strides.Any(s => s < 1) || dilations.Any(d => d < 1) || pads.Any(p => p < 0) || kernel.Any(k => k < 1))
            throw new InvalidDataException($"{what}: kernel [{string.Join(", ", kernel)}], strides [{string.Join(", ", strides)}], dilations [{string.Join(", ", dilations)}], pads [{string.Join(", ", pads)}] are not a valid 2-D window.");
        var result = new long[2];
        for (var i = 0; i < 2; i++)
        {
            var size = x[2 + i];
            var effective = dilations[i] * (kernel[i] - 1) + 1;
            switch (autoPad)
            {
                case "NOTSET" or "":
                {
                    var span = size + pads[i] + pads[i + 2] - effective;
                    if (span < 0) throw new InvalidDataException($"{what}: the window ({effective}) is larger than the padded input ({size + pads[i] + pads[i + 2]}).");
                    result[i] = (ceil ? (span + strides[i] - 1) / strides[i] : span / strides[i]) + 1;
                    break;
                }
                case "VALID":
                    if (size < effective) throw new InvalidDataException($"{what}: the window ({effective}) is larger than the input ({size}).");
                    result[i] = (size - effective) / strides[i] + 1;
                    break;
                case "SAME_UPPER" or "SAME_LOWER":
                    result[i] = (size + strides[i] - 1) / strides[i];
                    break;
                default:
                    throw new InvalidDataException($"{what}: auto_pad '{autoPad}' is unknown.");
            }
            if (result[i] < 1) throw new InvalidDataException($"{what}: the output would be empty.");
        }
        return result;
    }
}
