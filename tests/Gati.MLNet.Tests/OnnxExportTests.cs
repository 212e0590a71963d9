using Gati.MLNet.Data;
using Gati.MLNet.Models;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Onnx;
using Gati.MLNet.Torch;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

/// <summary>
/// Every exported piece against the TorchSharp network it came from, on ONNX Runtime, with non-trivial weights and
/// batch-norm statistics (a random initialisation has mean 0 and variance 1, under which a wrong fold passes).
/// </summary>
public sealed class OnnxExportTests
{
    private static float[] Run(byte[] model, string input, float[] values, long[] shape, string output)
    {
        using var session = new InferenceSession(model);
        using var value = OrtValue.CreateTensorValueFromMemory(values, shape);
        using var results = session.Run(new RunOptions(), [input], [value], [output]);
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static float[] Random(Generator generator, params long[] shape)
    {
        using var scope = NewDisposeScope();
        return randn(shape, generator: generator).data<float>().ToArray();
    }

    /// <summary>Gives every batch norm running statistics and affine parameters far from their initial values.</summary>
    private static void Perturb(nn.Module network, Generator generator)
    {
        using var noGrad = no_grad();
        foreach (var (name, tensor) in network.state_dict())
        {
            if (!tensor.is_floating_point()) continue;
            using var scope = NewDisposeScope();
            if (name.EndsWith("running_var", StringComparison.Ordinal)) tensor.copy_(rand(tensor.shape, generator: generator).mul_(Scale(2)).add_(Scale(0.2)));
            else if (name.EndsWith("running_mean", StringComparison.Ordinal) || name.Contains("bn", StringComparison.Ordinal) || name.Contains("shortcut.1", StringComparison.Ordinal))
                tensor.copy_(randn(tensor.shape, generator: generator).mul_(Scale(0.5)));
        }
    }

    private static Scalar Scale(double value) => value.ToScalar();

    private static void AssertClose(float[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        var scale = Math.Max(1e-3, expected.Max(Math.Abs));
        var worst = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
        Assert.True(worst <= tolerance * scale, $"max |difference| {worst:G3} against a scale of {scale:G3}");
    }

    [Theory]
    [InlineData(ResNetArchitecture.ResNet18, 1, 28, 4)]
    [InlineData(ResNetArchitecture.ResNet34, 3, 32, 2)]
    [InlineData(ResNetArchitecture.ResNet50, 3, 32, 2)]
    public void FullModel_NonTrivialBatchNorms_LogitsMatchTorchSharp(ResNetArchitecture architecture, int channels, int size, int width)
    {
        using var generator = new Generator(11);
        var config = new ResNetConfig(architecture, new TensorShape(channels, size, size), 7, width);
        using var network = SeededInit.Create(3, () => new ResNet(config));
        Perturb(network, generator);
        network.eval();
        var images = Random(generator, 5, channels, size, size);
        float[] expected;
        using (no_grad())
        using (var scope = NewDisposeScope())
            expected = network.forward(tensor(images, [5, channels, size, size])).data<float>().ToArray();

        var model = ResNetOnnx.FullModel(network, new Dictionary<string, string>());
        var logits = Run(model, "Image", images, [5, channels, size, size], "Logits");
        AssertClose(expected, logits, 1e-4);
        var score = Run(model, "Image", images, [5, channels, size, size], "Score");
        for (var row = 0; row < 5; row++) Assert.Equal(1f, score.AsSpan(row * 7, 7).ToArray().Sum(), 4);
    }

    [Theory]
    [InlineData("fc:32", 200)]
    [InlineData("pool:50:16", 200)]   // 50 divides 200: a reshape and a mean
    [InlineData("pool:64:16", 200)]   // 64 does not divide 200: windows of 3 and 4 values
    [InlineData("conv", 200)]
    [InlineData("conv:5:2", 201)]
    public void Predictor_EveryKind_LogProbabilitiesMatchTorchSharp(string architecture, int inputSize)
    {
        using var generator = new Generator(12);
        using var predictor = SeededInit.Create(4, () => PredictorNetwork.Create(PredictorArchitecture.Parse(architecture), inputSize, 6));
        using (no_grad())
        {
            foreach (var parameter in predictor.parameters())
            {
                using var scope = NewDisposeScope();
                parameter.add_(randn(parameter.shape, generator: generator).mul_(Scale(0.1)));
            }
        }
        predictor.eval();
        var features = Random(generator, 4, inputSize);
        float[] expected;
        using (no_grad())
        using (var scope = NewDisposeScope())
            expected = predictor.forward(tensor(features, [4, inputSize])).data<float>().ToArray();

        var graph = new OnnxGraphBuilder("predictor");
        var input = graph.Input("Features", global::Onnx.TensorProto.Types.DataType.Float, null, inputSize);
        graph.Output(graph.Rename(CacheOnnx.Predictor(graph, predictor, input, "p"), "LogProbabilities"), global::Onnx.TensorProto.Types.DataType.Float, null, 6);
        AssertClose(expected, Run(graph.ToBytes(), "Features", features, [4, inputSize], "LogProbabilities"), 1e-4);
    }

    [Theory]
    [InlineData(8, 8, 8, 4)]   // the grid divides the map: equal cells
    [InlineData(6, 7, 5, 3)]   // it does not: PyTorch's adaptive bins, overlapping
    [InlineData(4, 5, 5, 1)]   // one cell: the channel means
    public void Predictor_Grid_LogProbabilitiesMatchTorchSharpOnTheFeatureMap(int channels, int height, int width, int grid)
    {
        var shape = new TensorShape(channels, height, width);
        using var generator = new Generator(14);
        using var predictor = SeededInit.Create(6, () => PredictorNetwork.Create(PredictorArchitecture.Grid(grid, 12), shape.Size, 5, shape));
        predictor.eval();
        var features = Random(generator, 3, shape.Size);
        float[] expected;
        using (no_grad())
        using (var scope = NewDisposeScope())
            expected = predictor.forward(tensor(features, [3, shape.Size])).data<float>().ToArray();

        var graph = new OnnxGraphBuilder("predictor");
        var input = graph.Input("Features", global::Onnx.TensorProto.Types.DataType.Float, null, channels, height, width);
        graph.Output(graph.Rename(CacheOnnx.Predictor(graph, predictor, input, "p", [channels, height, width]), "LogProbabilities"),
            global::Onnx.TensorProto.Types.DataType.Float, null, 5);
        AssertClose(expected, Run(graph.ToBytes(), "Features", features, [3, channels, height, width], "LogProbabilities"), 1e-4);
    }

    [Theory]
    [InlineData("grid", 8, 8, 8, 4)]   // equal cells
    [InlineData("grid", 6, 7, 5, 3)]   // PyTorch's adaptive bins, overlapping
    [InlineData("grid", 4, 5, 5, 1)]   // the channel means
    [InlineData("flat", 3, 7, 9, 50)]  // uneven 1-D windows
    [InlineData("flat", 4, 4, 4, 16)]  // equal 1-D windows
    public void Reduction_OneRowInManagedCode_MatchesTorchSharp(string kind, int channels, int height, int width, int size)
    {
        // The shadow window reduces a kept request's features in managed code, on the request's thread; the predictor and
        // the extraction transformer reduce with TorchSharp. Both must give the predictor the same input.
        var shape = new TensorShape(channels, height, width);
        var reduction = kind == "grid" ? FeatureReduction.Grid(size) : FeatureReduction.Flat(size);
        using var generator = new Generator(15);
        var features = Random(generator, 2, shape.Size);
        float[] expected;
        using (no_grad())
        using (var scope = NewDisposeScope())
            expected = reduction.Apply(tensor(features, [2, shape.Size]), shape).contiguous().data<float>().ToArray();
        var reducedSize = reduction.Apply(shape).Size;
        for (var row = 0; row < 2; row++)
        {
            var actual = new float[reducedSize];
            reduction.Apply(features.AsSpan(row * shape.Size, shape.Size), shape, actual);
            AssertClose(expected.AsSpan(row * reducedSize, reducedSize).ToArray(), actual, 1e-5);
        }
        var error = Assert.Throws<ArgumentException>(() => reduction.Apply(features.AsSpan(0, shape.Size - 1), shape, new float[reducedSize]));
        Assert.Contains(shape.ToString(), error.Message);
    }

    [Theory]
    [InlineData("sorted:16")]
    [InlineData("raw:8")]
    [InlineData("reference")]
    public void Selector_EveryKind_HitsMatchTheThresholdedProbability(string architecture)
    {
        using var generator = new Generator(13);
        using var selector = SeededInit.Create(5, () => new SelectorNetwork(SelectorArchitecture.Parse(architecture), 6));
        selector.eval();
        using var scope = NewDisposeScope();
        var logProbabilities = nn.functional.log_softmax(randn([64, 6], generator: generator).mul_(Scale(3)), 1);
        var hitProbability = selector.HitProbability(logProbabilities).data<float>().ToArray();
        var threshold = hitProbability.Order().ElementAt(32); // about half the rows hit

        var graph = new OnnxGraphBuilder("selector");
        var input = graph.Input("LogProbabilities", global::Onnx.TensorProto.Types.DataType.Float, null, 6);
        graph.Output(graph.Rename(CacheOnnx.Hits(graph, selector, threshold, input, "s"), "Hit"), global::Onnx.TensorProto.Types.DataType.Bool, (long?)null);
        using var session = new InferenceSession(graph.ToBytes());
        using var value = OrtValue.CreateTensorValueFromMemory(logProbabilities.data<float>().ToArray(), [64, 6]);
        using var results = session.Run(new RunOptions(), ["LogProbabilities"], [value], ["Hit"]);
        var hits = results[0].GetTensorDataAsSpan<bool>().ToArray();
        var expected = hitProbability.Select(p => p >= threshold).ToArray();
        // Rows within float rounding of the threshold may fall either way; no others.
        var differing = Enumerable.Range(0, 64).Where(i => hits[i] != expected[i]).ToArray();
        Assert.All(differing, i => Assert.True(Math.Abs(hitProbability[i] - threshold) < 1e-6, $"row {i}: P(hit) {hitProbability[i]} vs threshold {threshold}"));
        Assert.InRange(hits.Count(h => h), 16, 48);
    }
}
