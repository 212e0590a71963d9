using Gati.MLNet.Data;
using Gati.MLNet.Import;
using Gati.MLNet.Onnx;
using Gati.MLNet.Tests.Infrastructure;
using Google.Protobuf;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace Gati.MLNet.Tests;

/// <summary>Importing ONNX networks someone else wrote: old opsets, folding, cut points, and files that must be refused.</summary>
public sealed class OnnxImportTests
{
    private static float[] RandomImages(int count, int size, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count * size).Select(_ => (float)random.NextDouble() * 2 - 1).ToArray();
    }

    /// <summary>Runs one input at a time through a model whose input is fixed at batch 1.</summary>
    private static float[] RunEach(byte[] model, string input, string output, float[] images, long[] dims)
    {
        using var session = new InferenceSession(model);
        var size = (int)dims.Aggregate(1L, (a, b) => a * b);
        var result = new List<float>();
        for (var i = 0; i < images.Length / size; i++)
        {
            using var value = OrtValue.CreateTensorValueFromMemory(images[(i * size)..((i + 1) * size)], [1, .. dims]);
            using var outputs = session.Run(new RunOptions(), [input], [value], [output]);
            result.AddRange(outputs[0].GetTensorDataAsSpan<float>().ToArray());
        }
        return result.ToArray();
    }

    private static float[] RunBatch(byte[] model, string input, string output, float[] images, long[] dims)
    {
        using var session = new InferenceSession(model);
        var size = dims.Aggregate(1L, (a, b) => a * b);
        using var value = OrtValue.CreateTensorValueFromMemory(images, [images.Length / size, .. dims]);
        using var outputs = session.Run(new RunOptions(), [input], [value], [output]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Fact]
    public void ImportOnnxModel_LegacyOpsetCnn_SameProbabilitiesAsTheOriginalForAWholeBatch()
    {
        using var temp = new TempDirectory();
        var path = temp.File("legacy.onnx");
        File.WriteAllBytes(path, LegacyOnnx.Bytes(LegacyOnnx.PlainCnn()));
        using var imported = new MLContext(0).Gati().ImportOnnxModel(path, new OnnxImportOptions { Scores = OnnxScores.Probabilities });

        var graph = imported.BaseModel.Graph;
        Assert.Equal(OnnxGraphBuilder.Opset, graph.Graph.Opset);
        Assert.DoesNotContain(graph.Graph.Nodes, n => n.OpType is "BatchNormalization" or "Dropout" or "Constant" or "Identity");
        // A plain chain: each value that leaves a layer (into a pooling or convolution) is a cut point.
        Assert.Equal(["r1", "p1", "r2"], imported.BaseModel.CutPoints.Select(c => c.Name));
        Assert.Equal([new TensorShape(8, 16, 16), new(8, 8, 8), new(16, 8, 8)], imported.BaseModel.CutPoints.Select(c => c.Shape));

        // The original reads one image at a time (its Reshape hard-codes batch 1); the import takes any batch.
        var images = RandomImages(5, 3 * 16 * 16, 3);
        var expected = RunEach(File.ReadAllBytes(path), "data", "prob", images, [3, 16, 16]);
        var actual = RunBatch(graph.FullModel(new Dictionary<string, string>()), "Image", "Score", images, [3, 16, 16]);
        Assert.Equal(expected.Length, actual.Length);
        Assert.All(expected.Zip(actual), p => Assert.InRange(Math.Abs(p.First - p.Second), 0, 1e-5));
    }

    [Fact]
    public void BaseGraph_SegmentsChainedCutPointByCutPoint_EqualTheWholeGraph()
    {
        using var temp = new TempDirectory();
        var path = temp.File("residual.onnx");
        File.WriteAllBytes(path, ResidualFeaturizer(seed: 4, withHead: true));
        using var imported = new MLContext(0).Gati().ImportOnnxModel(path);
        var graph = imported.BaseModel.Graph;
        Assert.True(graph.Cuts.Count >= 2);
        var images = RandomImages(4, 3 * 16 * 16, 5);
        var x = images;
        for (var part = 0; part <= graph.Cuts.Count; part++)
        {
            var builder = new OnnxGraphBuilder("part");
            var dims = graph.DimsAt(part);
            var input = builder.Input("In", TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
            var output = builder.Rename(graph.Emit(builder, part, part + 1, input, "b/"), "Out");
            builder.Output(output, TensorProto.Types.DataType.Float, part == graph.Cuts.Count ? [null, graph.ClassCount] : [null, .. graph.DimsAt(part + 1).Select(d => (long?)d)]);
            x = RunBatch(builder.ToBytes(), "In", "Out", x, dims);
        }
        var whole = RunBatch(graph.FullModel(new Dictionary<string, string>()), "Image", "Logits", images, [3, 16, 16]);
        Assert.Equal(whole.Length, x.Length);
        Assert.All(whole.Zip(x), p => Assert.InRange(Math.Abs(p.First - p.Second), 0, 1e-4));
    }

    public static TheoryData<string, string> HostileCases() => new()
    {
        { "truncated", "not a readable ONNX model" },
        { "empty", "the file is empty" },
        { "absurd dimensions", "more than 1073741824 elements" },
        { "data size mismatch", "holds 1152" },
        { "external data outside the folder", "outside the model's folder" },
        { "external data by absolute path", "outside the model's folder" },
        { "external data through a link", "is a link to a file outside the model's folder" },
        { "external data past the end of its file", "reads bytes" },
        { "cycle", "has a cycle through Conv node 'conv2'" },
        { "unknown operator", "Einsum node 'relu1' uses operator Einsum" },
        { "shape that does not resolve", "Reshape node 'flatten'" },
        { "two inputs", "with one input (an image batch); this one has 2" },
        { "no cut point", "has no cut point" },
    };

    [Theory]
    [MemberData(nameof(HostileCases))]
    public void ImportOnnxModel_HostileFile_IsRefusedWithAnErrorNamingTheProblem(string kind, string expected)
    {
        using var temp = new TempDirectory();
        var path = temp.File("model.onnx");
        var model = LegacyOnnx.PlainCnn();
        var graph = model.Graph;
        var bytes = (byte[]?)null;
        void External(string location, long length = -1)
        {
            var tensor = graph.Initializer.First(t => t.Name == "W2");
            var data = tensor.FloatData.SelectMany(BitConverter.GetBytes).ToArray();
            File.WriteAllBytes(temp.File("weights.bin"), data);
            tensor.FloatData.Clear();
            tensor.DataLocation = TensorProto.Types.DataLocation.External;
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
            if (length >= 0) tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        }
        switch (kind)
        {
            case "truncated":
                var whole = model.ToByteArray();
                bytes = whole[..(whole.Length / 2)];
                break;
            case "empty":
                bytes = [];
                break;
            case "absurd dimensions":
                var w1 = graph.Initializer.First(t => t.Name == "W1");
                w1.Dims.Clear();
                w1.Dims.AddRange([1 << 20, 1 << 20, 3, 3]);
                break;
            case "data size mismatch":
                var w2 = graph.Initializer.First(t => t.Name == "W2");
                w2.Dims[3] = 4;
                break;
            case "external data outside the folder":
                External("../weights.bin");
                break;
            case "external data by absolute path":
                External("/etc/hostname");
                break;
            case "external data through a link":
                External("link.bin");
                File.CreateSymbolicLink(temp.File("link.bin"), "/etc/hostname");
                break;
            case "external data past the end of its file":
                External("weights.bin");
                graph.Initializer.First(t => t.Name == "W2").ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = "100" });
                break;
            case "cycle":
                graph.Node.First(n => n.Name == "conv2").Input[0] = "r2";
                break;
            case "unknown operator":
                graph.Node.First(n => n.Name == "relu1").OpType = "Einsum";
                break;
            case "shape that does not resolve":
                var shape = graph.Node.First(n => n.Name == "shape_const").Attribute[0].T;
                shape.Int64Data.Clear();
                shape.Int64Data.AddRange([1, 7]);
                break;
            case "two inputs":
                LegacyOnnx.Input(graph, "extra", 1, 3);
                break;
            case "no cut point":
                // The input goes straight into the head: nothing to exit at.
                while (graph.Node.Count > 0) graph.Node.RemoveAt(0);
                LegacyOnnx.Node(graph, "GlobalAveragePool", "gap", ["data"], ["g"]);
                LegacyOnnx.Node(graph, "Flatten", "flatten", ["g"], ["flat"], ("axis", 1L));
                LegacyOnnx.Weight(graph, new Random(1), "W4", 10, 3);
                LegacyOnnx.Node(graph, "Gemm", "fc", ["flat", "W4", "B3"], ["prob"], ("transB", 1L));
                break;
        }
        File.WriteAllBytes(path, bytes ?? model.ToByteArray());
        var error = Record.Exception(() => new MLContext(0).Gati().ImportOnnxModel(path, new OnnxImportOptions { Scores = OnnxScores.Probabilities }));
        Assert.NotNull(error);
        Assert.True(error is InvalidDataException or ArgumentException, $"{kind}: {error.GetType().Name}: {error.Message}");
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void ImportOnnxModel_NamedCutPointInsideAResidualBlock_IsRefusedNamingIt()
    {
        using var temp = new TempDirectory();
        var path = temp.File("residual.onnx");
        File.WriteAllBytes(path, ResidualFeaturizer(seed: 2, withHead: true));
        var error = Assert.Throws<ArgumentException>(() => new MLContext(0).Gati().ImportOnnxModel(path, new OnnxImportOptions { CutPoints = ["inner"] }));
        Assert.Contains("'inner' is not a cut point", error.Message);
        Assert.Contains("does not pass through it", error.Message);

        using var named = new MLContext(0).Gati().ImportOnnxModel(path, new OnnxImportOptions { CutPoints = ["block"] });
        Assert.Equal(["block"], named.BaseModel.CutPoints.Select(c => c.Name));
    }

    /// <summary>
    /// A small residual featurizer or classifier: stem conv → relu (<c>stem</c>), a block (conv → relu <c>inner</c> →
    /// conv, added to the stem, relu: <c>block</c>), a strided conv → relu (<c>down</c>), global average pool, then either
    /// <c>Features</c> [N, 8] or, with a head, <c>Logits</c> [N, 5].
    /// </summary>
    internal static byte[] ResidualFeaturizer(int seed, bool withHead, string input = "Pixels")
    {
        var random = new Random(seed);
        float[] W(int count, float scale = 0.3f) => Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 2 - 1) * scale).ToArray();
        var g = new OnnxGraphBuilder("residual");
        var x = g.Input(input, TensorProto.Types.DataType.Float, null, 3, 16, 16);
        string Conv(string from, int cin, int cout, int stride, string? output = null)
        {
            var pads = new long[] { 1, 1, 1, 1 };
            (string Name, object Value)[] attrs = [("kernel_shape", new long[] { 3, 3 }), ("pads", pads), ("strides", new long[] { stride, stride })];
            var inputs = new[] { from, g.Constant("w", W(cout * cin * 9), cout, cin, 3, 3), g.Constant("b", W(cout, 0.1f), cout) };
            return output is null ? g.Node("Conv", inputs, attrs) : g.NodeNamed("Conv", inputs, output, attrs);
        }
        var stem = g.NodeNamed("Relu", [Conv(x, 3, 8, 1)], "stem");
        var inner = g.NodeNamed("Relu", [Conv(stem, 8, 8, 1)], "inner");
        var block = g.NodeNamed("Relu", [g.Node("Add", [Conv(inner, 8, 8, 1), stem])], "block");
        var down = g.NodeNamed("Relu", [Conv(block, 8, 8, 2)], "down");
        var pooled = g.Node("Flatten", [g.Node("GlobalAveragePool", [down])], ("axis", 1));
        if (!withHead)
        {
            g.Output(g.Rename(pooled, "Features"), TensorProto.Types.DataType.Float, null, 8);
            return g.ToBytes();
        }
        var logits = g.NodeNamed("Gemm", [pooled, g.Constant("fc.w", W(5 * 8, 1), 5, 8), g.Constant("fc.b", W(5, 0.1f), 5)], "Logits", ("transB", 1));
        g.Output(logits, TensorProto.Types.DataType.Float, null, 5);
        return g.ToBytes();
    }
}
