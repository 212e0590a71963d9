using Onnx;

namespace Gati.MLNet.Onnx;

/// <summary>
/// Brings an imported graph to the form Gati writes and serves: opset <see cref="OnnxGraphBuilder.Opset"/> semantics,
/// batch norms folded into the convolutions before them (or written as a per-channel multiply and add where no
/// convolution precedes), constants as initializers, weights as raw float32, no Identity or Dropout nodes, a symbolic
/// batch dimension (a Reshape that hard-codes batch 1 is rewritten to copy the batch), and nothing that no output
/// needs. Operators outside <see cref="OnnxShapes.Supported"/> are refused naming the node.
/// </summary>
internal static class OnnxNormalizer
{
    /// <summary>Oldest default-domain opset imported (numpy broadcasting of element-wise operators starts at 7).</summary>
    public const int OldestOpset = 7;

    /// <summary>Newest default-domain opset imported (the operator semantics used here are those of opset 17; 18 moves ReduceMean's axes).</summary>
    public const int NewestOpset = 17;

    /// <summary>The epsilon BatchNormalization uses when the node does not say.</summary>
    private const float DefaultEpsilon = 1e-5f;

    /// <summary>Normalises <paramref name="graph"/> in place and returns the shape of every value.</summary>
    public static Dictionary<string, long[]> Normalize(OnnxGraph graph)
    {
        foreach (var node in graph.Nodes)
        {
            if (!OnnxShapes.Supported.Contains(node.OpType) && node.OpType is not ("Dropout" or "Constant"))
                throw new InvalidDataException($"{graph.Name}: {OnnxGraph.Describe(node)} uses operator {node.OpType}, which Gati does not import " +
                                               $"(supported: {string.Join(", ", OnnxShapes.Supported.Order(StringComparer.Ordinal))}).");
            if (node.OpType == "If") throw new InvalidDataException($"{graph.Name}: {OnnxGraph.Describe(node)}: control flow is not imported.");
        }
        ConstantsToInitializers(graph);
        graph.RemoveUnused();
        graph.SortTopologically();
        UpgradeAttributes(graph);
        RemovePassThrough(graph);
        graph.RemoveUnused();
        graph.SortTopologically();

        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal) { [graph.Input] = graph.InputShape };
        foreach (var (name, tensor) in graph.Initializers) shapes[name] = tensor.Dims.ToArray();
        foreach (var node in graph.Nodes.ToList())
        {
            if (node.OpType == "Reshape") KeepBatchInReshape(graph, node, shapes);
            if (node.OpType is "Softmax" or "LogSoftmax" && graph.Opset < 13) UpgradeSoftmax(graph, node, shapes);
            OnnxShapes.InferNode(graph, node, shapes); // a batch norm keeps its input's shape; folded below, once every shape is known
        }
        FoldBatchNorms(graph, shapes);
        foreach (var name in graph.Initializers.Keys.ToList())
        {
            var tensor = graph.Initializers[name];
            if (OnnxTensors.IsFloatingPoint(tensor)) graph.Initializers[name] = OnnxTensors.AsFloat32(tensor, graph.Name);
        }
        graph.Opset = OnnxGraphBuilder.Opset;
        graph.RemoveUnused();
        graph.SortTopologically();
        return OnnxShapes.Infer(graph);
    }

    /// <summary>Constant nodes become initializers (one place where constant values live).</summary>
    private static void ConstantsToInitializers(OnnxGraph graph)
    {
        foreach (var node in graph.Nodes.Where(n => n.OpType == "Constant").ToList())
        {
            var value = OnnxGraph.Attribute(node, "value")?.T;
            TensorProto tensor;
            if (value is not null)
            {
                tensor = value.Clone();
            }
            else if (OnnxGraph.Attribute(node, "value_float") is { } f)
            {
                tensor = OnnxTensors.Float("", [f.F]);
            }
            else if (OnnxGraph.Attribute(node, "value_floats") is { } fs)
            {
                tensor = OnnxTensors.Float("", fs.Floats.ToArray(), fs.Floats.Count);
            }
            else if (OnnxGraph.Attribute(node, "value_int") is { } i)
            {
                tensor = OnnxTensors.Int64("", [i.I]);
            }
            else if (OnnxGraph.Attribute(node, "value_ints") is { } ints)
            {
                tensor = OnnxTensors.Int64("", ints.Ints.ToArray(), ints.Ints.Count);
            }
            else
            {
                throw new InvalidDataException($"{graph.Name}: {OnnxGraph.Describe(node)} holds a kind of constant Gati does not import.");
            }
            tensor.Name = node.Output[0];
            OnnxTensors.Validate(tensor, graph.Name);
            graph.Initializers[tensor.Name] = tensor;
            graph.Nodes.Remove(node);
        }
    }

    /// <summary>Attributes that later opsets turned into inputs, and attributes later opsets dropped.</summary>
    private static void UpgradeAttributes(OnnxGraph graph)
    {
        foreach (var node in graph.Nodes)
        {
            var what = $"{graph.Name}: {OnnxGraph.Describe(node)}";
            switch (node.OpType)
            {
                case "Split" when OnnxGraph.Ints(node, "split") is { } split:
                    MoveToInput(graph, node, 1, graph.AddInt64Initializer(node.Output[0] + "_split", split, split.Length));
                    OnnxGraph.RemoveAttribute(node, "split");
                    break;
                case "Squeeze" or "Unsqueeze" or "ReduceSum" when OnnxGraph.Ints(node, "axes") is { } axes && (node.OpType != "ReduceSum" || graph.Opset < 13):
                    MoveToInput(graph, node, 1, graph.AddInt64Initializer(node.Output[0] + "_axes", axes, axes.Length));
                    OnnxGraph.RemoveAttribute(node, "axes");
                    break;
                case "Pad" when OnnxGraph.Ints(node, "pads") is { } pads:
                    MoveToInput(graph, node, 1, graph.AddInt64Initializer(node.Output[0] + "_pads", pads, pads.Length));
                    OnnxGraph.RemoveAttribute(node, "pads");
                    var fill = OnnxGraph.Float(node, "value", 0);
                    if (fill != 0) MoveToInput(graph, node, 2, graph.AddFloatInitializer(node.Output[0] + "_value", [fill]));
                    OnnxGraph.RemoveAttribute(node, "value");
                    break;
                case "Clip" when graph.Opset < 11:
                    var min = OnnxGraph.Float(node, "min", float.MinValue);
                    var max = OnnxGraph.Float(node, "max", float.MaxValue);
                    OnnxGraph.RemoveAttribute(node, "min");
                    OnnxGraph.RemoveAttribute(node, "max");
                    MoveToInput(graph, node, 1, graph.AddFloatInitializer(node.Output[0] + "_min", [min]));
                    MoveToInput(graph, node, 2, graph.AddFloatInitializer(node.Output[0] + "_max", [max]));
                    break;
                case "Reshape" when OnnxGraph.Ints(node, "shape") is { } shape:
                    MoveToInput(graph, node, 1, graph.AddInt64Initializer(node.Output[0] + "_shape", shape, shape.Length));
                    OnnxGraph.RemoveAttribute(node, "shape");
                    break;
                case "BatchNormalization":
                    if (OnnxGraph.Int(node, "spatial", 1) == 0)
                        throw new InvalidDataException($"{what}: per-activation batch normalisation (spatial = 0) is not imported.");
                    OnnxGraph.RemoveAttribute(node, "spatial");
                    OnnxGraph.RemoveAttribute(node, "consumed_inputs");
                    OnnxGraph.RemoveAttribute(node, "is_test");
                    if (OnnxGraph.Int(node, "training_mode", 0) != 0) throw new InvalidDataException($"{what} is in training mode.");
                    break;
                case "MaxPool":
                    OnnxGraph.RemoveAttribute(node, "storage_order");
                    break;
                case "Gemm" or "Add" or "Sub" or "Mul" or "Div":
                    if (OnnxGraph.Attribute(node, "broadcast") is not null && graph.Opset >= 7) OnnxGraph.RemoveAttribute(node, "broadcast");
                    break;
            }
        }
    }

    private static void MoveToInput(OnnxGraph graph, NodeProto node, int index, string value)
    {
        while (node.Input.Count < index) node.Input.Add("");
        if (node.Input.Count == index) node.Input.Add(value);
        else node.Input[index] = value;
    }

    /// <summary>Identity, inference-mode Dropout and one-input Sum forward their input.</summary>
    private static void RemovePassThrough(OnnxGraph graph)
    {
        var consumers = graph.Consumers();
        foreach (var node in graph.Nodes.ToList())
        {
            var passThrough = node.OpType is "Identity" or "Dropout" || (node.OpType == "Sum" && node.Input.Count == 1);
            if (!passThrough) continue;
            if (node.Output.Skip(1).Any(o => o.Length > 0 && consumers.ContainsKey(o)))
                throw new InvalidDataException($"{graph.Name}: {OnnxGraph.Describe(node)}'s mask output is read; only inference-mode Dropout is imported.");
            var from = node.Output[0];
            var to = node.Input[0];
            graph.Nodes.Remove(node);
            if (graph.Outputs.Contains(from) && !graph.Nodes.Any(n => n.Output.Contains(to)) && to != graph.Input)
            {
                // An output renamed through an Identity of an initializer: nothing to compute.
                throw new InvalidDataException($"{graph.Name}: output '{from}' is a constant.");
            }
            graph.ReplaceReads(from, to);
        }
    }

    /// <summary>A Reshape whose target hard-codes batch 1 (as exporters traced at batch 1 write) copies the batch instead.</summary>
    private static void KeepBatchInReshape(OnnxGraph graph, NodeProto node, Dictionary<string, long[]> shapes)
    {
        if (!shapes.TryGetValue(node.Input[0], out var x) || x.Length == 0 || x[0] != OnnxShapes.Batch) return;
        if (!graph.Initializers.TryGetValue(node.Input[1], out var tensor)) return;
        var target = OnnxTensors.Int64s(tensor, graph.Name);
        if (target.Length == 0 || target[0] != 1) return;
        target[0] = 0;
        var name = graph.AddInt64Initializer(node.Output[0] + "_shape", target, target.Length);
        node.Input[1] = name;
        shapes[name] = [target.Length];
    }

    /// <summary>
    /// Before opset 13, Softmax coerced its input to 2-D at <c>axis</c> (default 1) and normalised over everything after
    /// it; from 13 it normalises along one axis. The two agree when the axis is the last one.
    /// </summary>
    private static void UpgradeSoftmax(OnnxGraph graph, NodeProto node, Dictionary<string, long[]> shapes)
    {
        var x = shapes[node.Input[0]];
        var axis = OnnxGraph.Int(node, "axis", 1);
        if (axis < 0) axis += x.Length;
        if (axis != x.Length - 1)
            throw new InvalidDataException($"{graph.Name}: {OnnxGraph.Describe(node)} normalises {OnnxShapes.Format(x)} over axes {axis}.. (opset {graph.Opset} semantics); Gati imports softmax over the last axis.");
        OnnxGraph.SetInt(node, "axis", axis);
    }

    /// <summary>
    /// Folds each BatchNormalization into the convolution before it (W' = W·s, b' = (b − μ)·s + β, s = γ/√(σ² + ε)) when
    /// that convolution feeds nothing else; otherwise writes it as x·s + (β − μ·s) with per-channel constants.
    /// </summary>
    private static void FoldBatchNorms(OnnxGraph graph, Dictionary<string, long[]> shapes)
    {
        var consumers = graph.Consumers();
        var producers = graph.Producers();
        foreach (var bn in graph.Nodes.Where(n => n.OpType == "BatchNormalization").ToList())
        {
            var what = $"{graph.Name}: {OnnxGraph.Describe(bn)}";
            if (bn.Input.Count < 5) throw new InvalidDataException($"{what} has {bn.Input.Count} inputs, not 5.");
            if (bn.Output.Skip(1).Any(o => o.Length > 0 && consumers.ContainsKey(o)))
                throw new InvalidDataException($"{what}: its running-statistics outputs are read (training mode).");
            float[] Constant(int i, string role) =>
                graph.Initializers.TryGetValue(bn.Input[i], out var t)
                    ? OnnxTensors.Floats(t, graph.Name)
                    : throw new InvalidDataException($"{what}: its {role} '{bn.Input[i]}' is computed, not a constant; only batch norms with fixed statistics are folded.");
            var gamma = Constant(1, "scale");
            var beta = Constant(2, "bias");
            var mean = Constant(3, "mean");
            var variance = Constant(4, "variance");
            var channels = gamma.Length;
            if (beta.Length != channels || mean.Length != channels || variance.Length != channels)
                throw new InvalidDataException($"{what}: scale, bias, mean and variance have {gamma.Length}, {beta.Length}, {mean.Length} and {variance.Length} values.");
            var epsilon = OnnxGraph.Float(bn, "epsilon", DefaultEpsilon);
            var scale = new double[channels];
            var shift = new double[channels];
            for (var c = 0; c < channels; c++)
            {
                if (variance[c] + epsilon <= 0) throw new InvalidDataException($"{what}: channel {c} has variance {variance[c]}.");
                scale[c] = gamma[c] / Math.Sqrt(variance[c] + (double)epsilon);
                shift[c] = beta[c] - mean[c] * scale[c];
            }
            var x = bn.Input[0];
            if (!shapes.TryGetValue(x, out var xShape) || xShape.Length < 2 || xShape[1] != channels)
                throw new InvalidDataException($"{what}: its input {OnnxShapes.Format(shapes.GetValueOrDefault(x))} does not have {channels} channels on axis 1.");
            var index = graph.Nodes.IndexOf(bn);
            if (producers.TryGetValue(x, out var conv) && conv.OpType == "Conv" && consumers[x].Count == 1 && !graph.Outputs.Contains(x)
                && graph.Initializers.TryGetValue(conv.Input[1], out var weightTensor)
                && (conv.Input.Count < 3 || conv.Input[2].Length == 0 || graph.Initializers.ContainsKey(conv.Input[2])))
            {
                var w = OnnxTensors.Floats(weightTensor, graph.Name);
                var outChannels = weightTensor.Dims[0];
                if (outChannels != channels) throw new InvalidDataException($"{what}: {channels} channels after a convolution with {outChannels} outputs.");
                var perChannel = w.Length / channels;
                var folded = new float[w.Length];
                for (var o = 0; o < channels; o++)
                    for (var i = 0; i < perChannel; i++) folded[o * perChannel + i] = (float)(w[o * perChannel + i] * scale[o]);
                var bias = conv.Input.Count > 2 && conv.Input[2].Length > 0 ? OnnxTensors.Floats(graph.Initializers[conv.Input[2]], graph.Name) : new float[channels];
                var foldedBias = new float[channels];
                for (var o = 0; o < channels; o++) foldedBias[o] = (float)(bias[o] * scale[o] + shift[o]);
                var weightName = graph.AddFloatInitializer(conv.Input[1] + "_bn", folded, weightTensor.Dims.ToArray());
                var biasName = graph.AddFloatInitializer(bn.Output[0] + "_bias", foldedBias, channels);
                conv.Input[1] = weightName;
                while (conv.Input.Count < 3) conv.Input.Add("");
                conv.Input[2] = biasName;
                // The convolution now produces the batch norm's output.
                conv.Output[0] = bn.Output[0];
                graph.Nodes.RemoveAt(index);
                shapes[bn.Output[0]] = xShape;
            }
            else
            {
                var broadcast = new long[xShape.Length - 1];
                broadcast[0] = channels;
                for (var i = 1; i < broadcast.Length; i++) broadcast[i] = 1;
                var scaleName = graph.AddFloatInitializer(bn.Output[0] + "_scale", scale.Select(v => (float)v).ToArray(), broadcast);
                var shiftName = graph.AddFloatInitializer(bn.Output[0] + "_shift", shift.Select(v => (float)v).ToArray(), broadcast);
                var scaled = graph.UniqueName(bn.Output[0] + "_scaled");
                graph.Nodes[index] = OnnxGraph.NewNode("Mul", bn.Name + "_scale", [x, scaleName], [scaled]);
                graph.Nodes.Insert(index + 1, OnnxGraph.NewNode("Add", bn.Name + "_shift", [scaled, shiftName], [bn.Output[0]]));
                shapes[scaled] = xShape;
                shapes[bn.Output[0]] = xShape;
            }
        }
    }
}
