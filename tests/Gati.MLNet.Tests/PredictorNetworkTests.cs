using Gati.MLNet.Data;
using Gati.MLNet.Models;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Torch;
using Gati.MLNet.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

public sealed class PredictorNetworkTests
{
    public PredictorNetworkTests() => TorchRuntime.EnsureInitialized();

    public static TheoryData<ResNetArchitecture, int> EveryLayer()
    {
        var data = new TheoryData<ResNetArchitecture, int>();
        foreach (var architecture in new[] { ResNetArchitecture.ResNet18, ResNetArchitecture.ResNet50 })
            for (var layer = 1; layer <= ResNetSpec.For(architecture).LayerCount; layer++)
                data.Add(architecture, layer);
        return data;
    }

    [Theory]
    [MemberData(nameof(EveryLayer))]
    public void Forward_EveryArchitectureOnEveryLayer_GivesLogProbabilitiesPerClass(ResNetArchitecture architecture, int layer)
    {
        var input = new TensorShape(3, 32, 32);
        var spec = ResNetSpec.For(architecture);
        var features = spec.LayerOutputShape(layer, input, baseWidth: 4).Size;
        foreach (var predictor in new[] { PredictorArchitecture.FC(16), PredictorArchitecture.Pool(64, 16), PredictorArchitecture.Conv(3, 1), PredictorArchitecture.Conv(5, 2) })
        {
            using var network = PredictorNetwork.Create(predictor, features, 10);
            using var scope = NewDisposeScope();
            var output = network.forward(randn(3, features));
            Assert.Equal(new long[] { 3, 10 }, output.shape);
            Assert.True(output.exp().sum(1).allclose(ones(3), atol: 1e-5));
            Assert.Equal(predictor.ParameterCount(features, 10), network.parameters().Sum(p => p.numel()));
        }
    }

    [Fact]
    public void Forward_WorksOnRealResNetLayerOutputs()
    {
        using var net = new ResNet(new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 28, 28), 10, 4));
        net.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (_, outputs) = net.ForwardWithLayers(randn(2, 1, 28, 28), [3, 7]);
        using var predictor = PredictorNetwork.Create(PredictorArchitecture.Conv(), net.LayerOutputShape(7).Size, 10);
        Assert.Equal(new long[] { 2, 10 }, predictor.forward(outputs[1].flatten(1)).shape);
    }

    /// <summary>A ResNet-18 (ResNet-50) with random weights, its last layer's output on random images, and its logits.</summary>
    private static (ResNet Net, Tensor Features, Tensor Logits) LastLayer(ResNetArchitecture architecture, int width)
    {
        var net = new ResNet(new ResNetConfig(architecture, new TensorShape(1, 28, 28), 10, width));
        net.eval();
        using var noGrad = no_grad();
        var (logits, outputs) = net.ForwardWithLayers(randn(6, 1, 28, 28), [net.Spec.LayerCount]);
        return (net, outputs[0].flatten(1), logits);
    }

    [Theory]
    [InlineData(ResNetArchitecture.ResNet18, "fc:64")]
    [InlineData(ResNetArchitecture.ResNet18, "fc:100")]
    [InlineData(ResNetArchitecture.ResNet18, "pool:4096:64")] // more bins than inputs (1,024): bins overlap
    [InlineData(ResNetArchitecture.ResNet18, "pool:512:80")] // two inputs per bin, aligned with the channels
    [InlineData(ResNetArchitecture.ResNet18, "pool:1500:64")] // bins of one or two inputs
    [InlineData(ResNetArchitecture.ResNet50, "pool:4096:1024")] // the seed's Pool on 8,192 inputs (512 channels of 4 x 4)
    public void InitializeAsHead_FcAndPoolOnTheLastLayer_ComputeTheBaseModelsOutput(ResNetArchitecture architecture, string predictor)
    {
        using var scope = NewDisposeScope();
        var (net, features, logits) = LastLayer(architecture, architecture == ResNetArchitecture.ResNet18 ? 8 : 16);
        using var _ = net;
        var shape = net.LayerOutputShape(net.Spec.LayerCount);
        using var network = PredictorNetwork.Create(PredictorArchitecture.Parse(predictor), (int)features.shape[1], 10);
        Assert.Null(network.InitializeAsHead(net.HeadLinear.weight!, net.HeadLinear.bias!, shape));
        using var noGrad = no_grad();
        var expected = nn.functional.log_softmax(logits, 1);
        var actual = network.forward(features);
        var error = actual.sub(expected).abs().max().item<float>();
        Assert.True(error < 1e-4f, $"{predictor}: largest difference from the base model's log-probabilities {error:G3}");
    }

    [Fact]
    public void InitializeAsHead_HiddenUnitsLeftOver_KeepTheirInputWeightsAndFeedNothingYet()
    {
        using var scope = NewDisposeScope();
        var (net, features, _) = LastLayer(ResNetArchitecture.ResNet18, 8); // 64 channels
        using var _ = net;
        using var network = PredictorNetwork.Create(PredictorArchitecture.FC(100), (int)features.shape[1], 10);
        var parameters = network.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var spare = parameters["fc1.weight"].narrow(0, 64, 36).clone();
        Assert.Null(network.InitializeAsHead(net.HeadLinear.weight!, net.HeadLinear.bias!, net.LayerOutputShape(8)));
        Assert.True(parameters["fc1.weight"].narrow(0, 64, 36).eq(spare).all().item<bool>());
        Assert.Equal(0f, parameters["fc2.weight"].narrow(1, 64, 36).abs().max().item<float>());
        Assert.True(parameters["fc2.weight"].narrow(1, 0, 64).eq(net.HeadLinear.weight!).all().item<bool>());
    }

    [Theory]
    [InlineData("conv", "no hidden layer")]
    [InlineData("fc:32", "32 hidden units, fewer than the head's 64 channels")]
    [InlineData("pool:100:64", "straddle channel")]
    [InlineData("pool:1000:64", "straddle channel")] // fewer bins than the 1,024 inputs, some across channel boundaries
    public void InitializeAsHead_NotRepresentable_SaysWhyAndLeavesTheWeights(string predictor, string reason)
    {
        using var scope = NewDisposeScope();
        var (net, features, _) = LastLayer(ResNetArchitecture.ResNet18, 8);
        using var _ = net;
        using var network = PredictorNetwork.Create(PredictorArchitecture.Parse(predictor), (int)features.shape[1], 10);
        var before = network.parameters().Select(p => p.clone()).ToArray();
        Assert.Contains(reason, network.InitializeAsHead(net.HeadLinear.weight!, net.HeadLinear.bias!, net.LayerOutputShape(8)));
        Assert.All(network.parameters().Zip(before), pair => Assert.True(pair.First.eq(pair.Second).all().item<bool>()));
    }

    [Fact]
    public void InitializeAsHead_LayerOfAnotherShape_IsRefusedWithBothShapes()
    {
        using var scope = NewDisposeScope();
        var (net, _, _) = LastLayer(ResNetArchitecture.ResNet18, 8);
        using var _ = net;
        using var network = PredictorNetwork.Create(PredictorArchitecture.FC(64), 1000, 10);
        Assert.Contains("does not flatten to the predictor's 1000 inputs",
            network.InitializeAsHead(net.HeadLinear.weight!, net.HeadLinear.bias!, net.LayerOutputShape(8)));
    }

    [Theory]
    [InlineData("fc:32")]
    [InlineData("pool:100:16")]
    [InlineData("grid:2:16")]
    [InlineData("conv:3:1")]
    [InlineData("conv:5:2")]
    public void FoldInputStandardization_EveryKind_ReadsRawFeaturesAsItReadStandardisedOnes(string architecture)
    {
        var shape = new TensorShape(4, 6, 6);
        using var network = PredictorNetwork.Create(PredictorArchitecture.Parse(architecture), (int)shape.Size, 10, shape);
        network.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var raw = rand(5, shape.Size).mul(300).add(20);
        const double mean = 170, scale = 85;
        var before = network.forward(raw.sub(mean).div(scale));
        network.FoldInputStandardization(mean, scale);
        var after = network.forward(raw);
        Assert.True(after.allclose(before, rtol: 1e-4, atol: 1e-4), $"max difference {after.sub(before).abs().max().item<float>()}");
    }

    [Theory]
    [InlineData(0.0, 0.0)]
    [InlineData(0.0, -1.0)]
    [InlineData(double.NaN, 1.0)]
    [InlineData(0.0, double.PositiveInfinity)]
    public void FoldInputStandardization_InvalidMoments_AreRefused(double mean, double scale)
    {
        using var network = PredictorNetwork.Create(PredictorArchitecture.FC(8), 12, 3);
        Assert.Throws<ArgumentOutOfRangeException>(() => network.FoldInputStandardization(mean, scale));
    }

    [Fact]
    public void ConvPredictor_StartsAsAPassThroughConvolution_SoNoPositionStartsDead()
    {
        using var network = PredictorNetwork.Create(PredictorArchitecture.Conv(3, 1), 50, 10);
        var parameters = network.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.Equal([0f, 1f, 0f], parameters["conv.weight"].data<float>().ToArray());
        Assert.Equal([0f], parameters["conv.bias"].data<float>().ToArray());
    }

    [Theory]
    [InlineData(3, 1, 50)]
    [InlineData(5, 2, 51)]
    [InlineData(4, 3, 64)]
    public void ConvPredictor_ShiftedSum_EqualsConv1dOfItsParameters_ValuesAndGradients(int kernel, int stride, int inputSize)
    {
        TorchRuntime.EnsureInitialized();
        using var net = SeededInit.Create(3, () => PredictorNetwork.Create(PredictorArchitecture.Conv(kernel, stride), inputSize, 4));
        var parameters = net.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad())
        {
            // Random taps and bias: the pass-through start would hide a wrong tap order.
            parameters["conv.weight"].copy_(SeededInit.Create(4, () => randn(1, 1, kernel)));
            parameters["conv.bias"].copy_(SeededInit.Create(5, () => randn(1)));
        }
        using var x = SeededInit.Create(6, () => randn(7, inputSize));

        using var output = net.forward(x);
        output.sum().backward();
        using var weightGrad = parameters["conv.weight"].grad!.clone();
        using var biasGrad = parameters["conv.bias"].grad!.clone();
        net.zero_grad();

        var reference = nn.functional.conv1d(x.unsqueeze(1), parameters["conv.weight"], parameters["conv.bias"], stride: stride).squeeze(1);
        var fc = (nn.Module<Tensor, Tensor>)net.named_children().Single(c => c.name == "fc").module;
        using var expected = nn.functional.log_softmax(fc.forward(nn.functional.relu(reference)), 1);
        expected.sum().backward();

        Assert.True(output.allclose(expected, rtol: 1e-5, atol: 1e-6));
        Assert.True(weightGrad.allclose(parameters["conv.weight"].grad!, rtol: 1e-4, atol: 1e-6));
        Assert.True(biasGrad.allclose(parameters["conv.bias"].grad!, rtol: 1e-4, atol: 1e-6));
    }

    [Fact]
    public void ConvPredictor_WrongInputWidth_IsRefusedWithBothSizes()
    {
        TorchRuntime.EnsureInitialized();
        using var net = PredictorNetwork.Create(PredictorArchitecture.Conv(), 50, 4);
        using var x = zeros(2, 60);
        var error = Assert.Throws<ArgumentException>(() => net.forward(x));
        Assert.Contains("[N, 50]", error.Message);
        Assert.Contains("[2, 60]", error.Message);
    }

    [Fact]
    public void ClipGradients_ConvPredictorIsBoundedToNormOne_FcIsLeftAsTheReference()
    {
        foreach (var (architecture, clipped) in new[] { (PredictorArchitecture.Conv(), true), (PredictorArchitecture.FC(16), false) })
        {
            using var network = PredictorNetwork.Create(architecture, 200, 10);
            using var scope = NewDisposeScope();
            (network.forward(rand(8, 200)).sum() * 1000).backward();
            var before = GradientNorm(network);
            Assert.True(before > 10, $"{architecture}: the test needs a large gradient, got {before}");
            network.ClipGradients();
            var after = GradientNorm(network);
            if (clipped) Assert.InRange(after, 0, 1.0001);
            else Assert.Equal(before, after, 6);
        }
    }

    private static double GradientNorm(PredictorNetwork network) =>
        Math.Sqrt(network.parameters().Where(p => p.grad is not null).Sum(p => p.grad!.pow(2).sum().item<float>()));

    [Theory]
    [InlineData("fc", "FC(1024)")]
    [InlineData("FC:512", "FC(512)")]
    [InlineData("pool", "Pool(4096, 1024)")]
    [InlineData("pool:2048:256", "Pool(2048, 256)")]
    [InlineData("Conv(3,1)", "Conv(3, 1)")]
    [InlineData("conv:5:2", "Conv(5, 2)")]
    public void Parse_ShortAndDisplayForms(string text, string expected) => Assert.Equal(expected, PredictorArchitecture.Parse(text).ToString());

    [Theory]
    [InlineData("mlp")]
    [InlineData("fc:0")]
    [InlineData("conv:x")]
    [InlineData("fc:1:2")]
    public void Parse_Invalid_Throws(string text) => Assert.ThrowsAny<ArgumentException>(() => PredictorArchitecture.Parse(text));

    [Fact]
    public void ConvOutputLength_FollowsTheReferenceFormula()
    {
        Assert.Equal(2046, PredictorArchitecture.Conv(3, 1).ConvOutputLength(2048));
        Assert.Equal(1023, PredictorArchitecture.Conv(3, 2).ConvOutputLength(2048));
        Assert.Equal(410, PredictorArchitecture.Conv(5, 5).ConvOutputLength(2050));
    }

    [Fact]
    public void ParameterCount_SeedLayer7Costs()
    {
        // Layer 7 of the full-width CIFAR ResNet-18: 512 x 4 x 4 = 8192 features, 10 classes (the seed's memory table).
        Assert.Equal(8192L * 1024 + 1024 + 1024 * 10 + 10, PredictorArchitecture.FC(1024).ParameterCount(8192, 10));
        Assert.Equal(4096L * 1024 + 1024 + 1024 * 10 + 10, PredictorArchitecture.Pool(4096, 1024).ParameterCount(8192, 10));
        Assert.Equal(3 + 1 + 8190L * 10 + 10, PredictorArchitecture.Conv(3, 1).ParameterCount(8192, 10));
    }
}

public sealed class DistillationLossTests
{
    public DistillationLossTests() => TorchRuntime.EnsureInitialized();

    private static double[] LogSoftmax(double[] z)
    {
        var max = z.Max();
        var log = Math.Log(z.Sum(v => Math.Exp(v - max))) + max;
        return z.Select(v => v - log).ToArray();
    }

    /// <summary>Independent double-precision implementation of the documented formula.</summary>
    private static double HandComputed(double[][] student, double[][] teacher, int[] labels, double alpha, double t)
    {
        double kl = 0, ce = 0;
        for (var n = 0; n < student.Length; n++)
        {
            var s = LogSoftmax(student[n].Select(v => v / t).ToArray());
            var q = LogSoftmax(teacher[n].Select(v => v / t).ToArray());
            for (var c = 0; c < s.Length; c++) kl += Math.Exp(q[c]) * (q[c] - s[c]);
            ce -= LogSoftmax(student[n])[labels[n]];
        }
        // KL averaged over batch x classes (PyTorch KLDivLoss's default 'mean', as the reference uses it).
        return kl / (student.Length * student[0].Length) * alpha * t * t + ce / student.Length * (1 - alpha);
    }

    [Theory]
    [InlineData(0.5, 6.0)]
    [InlineData(0.0, 1.0)]
    [InlineData(1.0, 3.0)]
    [InlineData(0.3, 2.5)]
    public void Compute_MatchesHandComputedValues(double alpha, double temperature)
    {
        double[][] student = [[-0.2, -2.1, -3.0], [-1.5, -0.4, -2.2]];
        double[][] teacher = [[2.0, 0.5, -1.0], [0.1, 3.0, 0.2]];
        int[] labels = [0, 1];
        using var scope = NewDisposeScope();
        var loss = DistillationLoss.Compute(
            tensor(student.SelectMany(r => r).Select(v => (float)v).ToArray(), [2, 3]),
            tensor(teacher.SelectMany(r => r).Select(v => (float)v).ToArray(), [2, 3]),
            tensor(labels.Select(l => (long)l).ToArray(), [2]), alpha, temperature);
        Assert.Equal(HandComputed(student, teacher, labels, alpha, temperature), loss.item<float>(), 4);
    }

    [Fact]
    public void Compute_StudentEqualsTeacher_OnlyTheHardTermRemains()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 1f, 2f, 0.5f }, [1, 3]);
        var loss = DistillationLoss.Compute(logits, logits, tensor(new long[] { 1 }, [1]), 0.5, 6);
        var ce = -LogSoftmax([1, 2, 0.5])[1];
        Assert.Equal(0.5 * ce, loss.item<float>(), 5);
    }

    [Fact]
    public void Compute_InvalidSettings_Throw()
    {
        using var scope = NewDisposeScope();
        var x = zeros(1, 2);
        var y = zeros(1, dtype: ScalarType.Int64);
        Assert.Throws<ArgumentOutOfRangeException>(() => DistillationLoss.Compute(x, x, y, 1.5, 6));
        Assert.Throws<ArgumentOutOfRangeException>(() => DistillationLoss.Compute(x, x, y, 0.5, 0));
    }
}
