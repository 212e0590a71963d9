using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Torch;
using Gati.MLNet.Training;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

public sealed class PredictorOptimizerTests
{
    public PredictorOptimizerTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(65_000, 500 / (0.05 * 65_000))] // ResNet-50 width 16, block 2: the rate drops to about 0.008
    [InlineData(10_000, 1)] // 0.05 x 10,000 = 500: at the bound, unchanged
    [InlineData(3_000, 1)]
    [InlineData(0, 1)]
    public void InputRateScale_FcPredictor_KeepsRateTimesMeanSquaredNormWithinTheBound(double meanSquaredNorm, double expected)
    {
        using var fc = PredictorNetwork.Create(PredictorArchitecture.FC(8), 100, 10);
        var scale = PredictorOptimizer.InputRateScale(fc, 0.05, meanSquaredNorm, 500);
        Assert.Equal(expected, scale, 12);
        Assert.True(0.05 * scale * meanSquaredNorm <= 500 * (1 + 1e-12));
    }

    [Fact]
    public void InputRateScale_PoolConvOrNoBound_IsOne()
    {
        using var pool = PredictorNetwork.Create(PredictorArchitecture.Pool(16, 8), 100, 10);
        using var conv = PredictorNetwork.Create(PredictorArchitecture.Conv(), 100, 10);
        using var fc = PredictorNetwork.Create(PredictorArchitecture.FC(8), 100, 10);
        Assert.Equal(1, PredictorOptimizer.InputRateScale(pool, 0.05, 1e6, 500));
        Assert.Equal(1, PredictorOptimizer.InputRateScale(conv, 0.05, 1e6, 500));
        Assert.Equal(1, PredictorOptimizer.InputRateScale(fc, 0.05, 1e6, null));
        Assert.Throws<ArgumentOutOfRangeException>(() => PredictorOptimizer.InputRateScale(fc, 0.05, 1e6, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => PredictorOptimizer.InputRateScale(fc, 0.05, 1e6, double.NaN));
    }

    [Fact]
    public void Create_ScaledFc_PutsTheInputLayerInItsOwnGroupAndSchedulesBothGroups()
    {
        using var fc = PredictorNetwork.Create(PredictorArchitecture.FC(8), 100, 10);
        using var optimizer = PredictorOptimizer.Create(fc, 0.05, 0.9, 5e-4, 0.25, out var scales);
        Assert.Equal([0.25, 1], scales);
        var groups = optimizer.ParamGroups.Cast<TorchSharp.Modules.SGD.ParamGroup>().ToArray();
        Assert.Equal(2, groups.Length);
        Assert.Equal([8 * 100, 8], groups[0].Parameters.Select(p => p.numel()));
        Assert.Equal([10 * 8, 10], groups[1].Parameters.Select(p => p.numel()));
        Assert.Equal(0.05 * 0.25, groups[0].LearningRate, 12);
        Assert.Equal(0.05, groups[1].LearningRate, 12);

        PredictorOptimizer.SetLearningRate(optimizer, scales, 0.025);
        Assert.Equal(0.025 * 0.25, groups[0].LearningRate, 12);
        Assert.Equal(0.025, groups[1].LearningRate, 12);
    }

    [Fact]
    public void Step_ScaledInputGroup_MovesTheInputLayerByItsScaleOfTheUnscaledStep()
    {
        // Same network and gradient twice: once with one rate, once with the input layer at a quarter of it.
        using var a = PredictorNetwork.Create(PredictorArchitecture.FC(8), 100, 10);
        using var b = PredictorNetwork.Create(PredictorArchitecture.FC(8), 100, 10);
        using (no_grad())
            foreach (var (pa, pb) in a.parameters().Zip(b.parameters())) pb.copy_(pa);
        using var plain = PredictorOptimizer.Create(a, 0.1, 0, 0, 1, out _);
        using var scaled = PredictorOptimizer.Create(b, 0.1, 0, 0, 0.25, out _);
        var before = a.parameters().Select(p => p.detach().clone()).ToArray();
        using var x = rand(16, 100);
        foreach (var (network, optimizer) in new (PredictorNetwork, TorchSharp.Modules.SGD)[] { (a, plain), (b, scaled) })
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            network.forward(x).sum().backward();
            optimizer.step();
        }
        var stepA = a.parameters().Zip(before, (p, p0) => p.detach() - p0).ToArray();
        var stepB = b.parameters().Zip(before, (p, p0) => p.detach() - p0).ToArray();
        Assert.True(stepA[0].abs().sum().item<float>() > 0);
        Assert.True(stepB[0].allclose(stepA[0] * 0.25, rtol: 1e-5, atol: 1e-8)); // fc1 weight
        Assert.True(stepB[1].allclose(stepA[1] * 0.25, rtol: 1e-5, atol: 1e-8)); // fc1 bias
        Assert.True(stepB[2].allclose(stepA[2], rtol: 1e-5, atol: 1e-8)); // fc2 weight
        Assert.True(stepB[3].allclose(stepA[3], rtol: 1e-5, atol: 1e-8)); // fc2 bias
    }

    [Fact]
    public void MeanSquaredNorm_Rows_AveragesEachRowsSquaredNorm()
    {
        Assert.Equal((1 + 4 + 9 + 16) / 2.0, PredictorOptimizer.MeanSquaredNorm([1, 2, 3, 4], 2));
        Assert.Throws<ArgumentException>(() => PredictorOptimizer.MeanSquaredNorm([1, 2, 3], 2));
    }
}
