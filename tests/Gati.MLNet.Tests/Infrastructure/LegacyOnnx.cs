using Google.Protobuf;
using Onnx;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>
/// ONNX models written the way other exporters write them, for the importer's tests: an old opset (8), batch norms with
/// the <c>spatial</c> attribute, a Constant node, a Reshape that hard-codes batch 1, Dropout, initializers listed as graph
/// inputs (IR 3) and value_info carrying batch 1. Weights are random but fixed by a seed; batch-norm statistics are not
/// trivial (a wrong fold would show).
/// </summary>
internal static class LegacyOnnx
{
    /// <summary>
    /// A plain CNN on [1, 3, 16, 16]: Conv-BN-ReLU, MaxPool, Conv-ReLU, Dropout, GlobalAveragePool, Reshape to [1, -1],
    /// Gemm to 10 classes, Softmax (output <c>prob</c>). No skip connections: its cut points are the values leaving each layer.
    /// </summary>
    public static ModelProto PlainCnn(int seed = 1)
    {
        var random = new Random(seed);
        var graph = new GraphProto { Name = "legacy-cnn" };
        Input(graph, "data", 1, 3, 16, 16);
        Weight(graph, random, "W1", 8, 3, 3, 3);
        Weight(graph, random, "gamma", 8, scale: 0.5f, offset: 1);
        Weight(graph, random, "beta", 8);
        Weight(graph, random, "mean", 8);
        Weight(graph, random, "var", 8, scale: 0.5f, offset: 1);
        Weight(graph, random, "W2", 16, 8, 3, 3);
        Weight(graph, random, "B2", 16);
        Weight(graph, random, "W3", 10, 16);
        Weight(graph, random, "B3", 10);
        var shape = new TensorProto { Name = "", DataType = (int)TensorProto.Types.DataType.Int64 };
        shape.Dims.Add(2);
        shape.Int64Data.AddRange([1, -1]);
        Node(graph, "Constant", "shape_const", [], ["flat_shape"], ("value", shape));
        Node(graph, "Conv", "conv1", ["data", "W1"], ["c1"], ("kernel_shape", new long[] { 3, 3 }), ("pads", new long[] { 1, 1, 1, 1 }));
        Node(graph, "BatchNormalization", "bn1", ["c1", "gamma", "beta", "mean", "var"], ["b1"], ("spatial", 1L), ("epsilon", 1e-3f));
        Node(graph, "Relu", "relu1", ["b1"], ["r1"]);
        Node(graph, "MaxPool", "pool1", ["r1"], ["p1"], ("kernel_shape", new long[] { 2, 2 }), ("strides", new long[] { 2, 2 }));
        Node(graph, "Conv", "conv2", ["p1", "W2", "B2"], ["c2"], ("kernel_shape", new long[] { 3, 3 }), ("pads", new long[] { 1, 1, 1, 1 }));
        Node(graph, "Relu", "relu2", ["c2"], ["r2"]);
        Node(graph, "Dropout", "drop", ["r2"], ["d2"], ("ratio", 0.5f));
        Node(graph, "GlobalAveragePool", "gap", ["d2"], ["g"]);
        Node(graph, "Reshape", "flatten", ["g", "flat_shape"], ["flat"]);
        Node(graph, "Gemm", "fc", ["flat", "W3", "B3"], ["logits"], ("transB", 1L));
        Node(graph, "Softmax", "softmax", ["logits"], ["prob"], ("axis", 1L));
        graph.Output.Add(Info("prob", 1, 10));
        foreach (var value in new[] { ("c1", new long[] { 1, 8, 16, 16 }), ("r1", [1, 8, 16, 16]), ("p1", [1, 8, 8, 8]), ("r2", [1, 16, 8, 8]) })
            graph.ValueInfo.Add(Info(value.Item1, value.Item2));
        // IR 3 lists initializers among the inputs.
        foreach (var initializer in graph.Initializer) graph.Input.Add(Info(initializer.Name, initializer.Dims.ToArray()));
        var model = new ModelProto { IrVersion = 3, ProducerName = "legacy-test", Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 8 });
        return model;
    }

    public static void Input(GraphProto graph, string name, params long[] dims) => graph.Input.Add(Info(name, dims));

    public static ValueInfoProto Info(string name, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } } };
    }

    public static void Weight(GraphProto graph, Random random, string name, params long[] dims) => Weight(graph, random, name, dims, 0.3f, 0);

    public static void Weight(GraphProto graph, Random random, string name, long dims, float scale, float offset) => Weight(graph, random, name, [dims], scale, offset);

    public static void Weight(GraphProto graph, Random random, string name, long[] dims, float scale, float offset)
    {
        var count = (int)dims.Aggregate(1L, (a, b) => a * b);
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        tensor.Dims.AddRange(dims);
        // Plain float_data, as CNTK writes small tensors.
        tensor.FloatData.AddRange(Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale + offset));
        graph.Initializer.Add(tensor);
    }

    public static NodeProto Node(GraphProto graph, string op, string name, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = name };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        foreach (var (key, value) in attributes)
        {
            var attribute = new AttributeProto { Name = key };
            switch (value)
            {
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
                case TensorProto t:
                    attribute.Type = AttributeProto.Types.AttributeType.Tensor;
                    attribute.T = t;
                    break;
            }
            node.Attribute.Add(attribute);
        }
        graph.Node.Add(node);
        return node;
    }

    public static byte[] Bytes(ModelProto model) => model.ToByteArray();
}
