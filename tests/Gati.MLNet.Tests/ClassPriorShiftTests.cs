using Gati.MLNet.Data;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Online;
using Gati.MLNet.Torch;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

public sealed class ClassPriorShiftTests
{
    public ClassPriorShiftTests() => TorchRuntime.EnsureInitialized();

    /// <summary>
    /// Rows whose true class is drawn from <paramref name="prior"/>, and a predictor's log-probabilities that are the exact
    /// posterior under equal priors: class c's score is N(μ, 1) for the true class and N(0, 1) otherwise, so
    /// p(y|x) ∝ exp(μ·s_y) under equal priors.
    /// </summary>
    private static (float[] LogProbabilities, int[] Classes) Rows(double[] prior, int rows, double mu, int seed)
    {
        var random = new Random(seed);
        var k = prior.Length;
        var logp = new float[rows * k];
        var classes = new int[rows];
        for (var r = 0; r < rows; r++)
        {
            var u = random.NextDouble();
            var y = 0;
            for (var acc = prior[0]; acc < u && y < k - 1; acc += prior[++y]) { }
            classes[r] = y;
            var scores = new double[k];
            for (var c = 0; c < k; c++) scores[c] = mu * (Normal(random) + (c == y ? mu : 0));
            var max = scores.Max();
            var log = Math.Log(scores.Sum(s => Math.Exp(s - max))) + max;
            for (var c = 0; c < k; c++) logp[r * k + c] = (float)(scores[c] - log);
        }
        return (logp, classes);
    }

    private static double Normal(Random random) => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    private static double Agreement(float[] logp, int[] classes, float[] offsets)
    {
        var k = offsets.Length;
        var right = 0;
        for (var r = 0; r < classes.Length; r++)
        {
            var best = 0;
            for (var c = 1; c < k; c++) if (logp[r * k + c] + offsets[c] > logp[r * k + best] + offsets[best]) best = c;
            if (best == classes[r]) right++;
        }
        return right / (double)classes.Length;
    }

    [Fact]
    public void Fit_PhaseOfPopularClasses_FavoursThemAndAgreesMoreOnNewRowsOfThePhase()
    {
        // A phase as the workload benchmark draws it: three classes take 90 % (Zipf), the other seven share the rest.
        var prior = new double[10];
        (prior[4], prior[9], prior[7]) = (0.9 / (1 + 0.5 + 1 / 3.0), 0.45 / (1 + 0.5 + 1 / 3.0), 0.3 / (1 + 0.5 + 1 / 3.0));
        foreach (var c in new[] { 0, 1, 2, 3, 5, 6, 8 }) prior[c] = 0.1 / 7;
        var (fitLogp, fitClasses) = Rows(prior, 150, 1.2, seed: 1);
        var offsets = ClassPriorShift.Fit(fitLogp, fitClasses, 10);

        Assert.All(offsets, o => Assert.InRange(o, -ClassPriorShift.Limit, ClassPriorShift.Limit));
        Assert.True(offsets[4] > offsets[9] && offsets[9] > 0 && offsets[7] > 0, string.Join(", ", offsets));
        foreach (var c in new[] { 0, 1, 2, 3, 5, 6, 8 }) Assert.True(offsets[c] < 0, $"class {c}: {offsets[c]}");
        var (newLogp, newClasses) = Rows(prior, 5000, 1.2, seed: 2);
        var before = Agreement(newLogp, newClasses, new float[10]);
        var after = Agreement(newLogp, newClasses, offsets);
        Assert.True(after > before + 0.05, $"agreement {before:P1} without the correction, {after:P1} with it");
    }

    [Fact]
    public void Fit_ReachesTheRidgeOptimum()
    {
        var prior = new[] { 0.5, 0.3, 0.15, 0.05 };
        var (logp, classes) = Rows(prior, 400, 1.0, seed: 3);
        var offsets = ClassPriorShift.Fit(logp, classes, 4);
        // Optimality: mean shifted probability − share of the class + λ b = 0 for every class.
        var gradient = new double[4];
        for (var r = 0; r < classes.Length; r++)
        {
            var shifted = Enumerable.Range(0, 4).Select(c => Math.Exp(logp[r * 4 + c] + offsets[c])).ToArray();
            var sum = shifted.Sum();
            for (var c = 0; c < 4; c++) gradient[c] += shifted[c] / sum - (classes[r] == c ? 1 : 0);
        }
        for (var c = 0; c < 4; c++) Assert.InRange(gradient[c] / classes.Length + ClassPriorShift.Ridge * offsets[c], -1e-4, 1e-4);
    }

    [Fact]
    public void Fit_EqualPriorsAsTrained_LeavesThePredictorNearlyAlone()
    {
        var (logp, classes) = Rows(Enumerable.Repeat(0.1, 10).ToArray(), 2000, 1.2, seed: 4);
        var offsets = ClassPriorShift.Fit(logp, classes, 10);
        Assert.All(offsets, o => Assert.InRange(o, -0.3f, 0.3f));
    }

    [Fact]
    public void Fit_ClassNeverSeen_IsDisfavouredWithinTheLimit()
    {
        var (logp, classes) = Rows([0.5, 0.5, 0], 300, 1.0, seed: 5);
        Assert.DoesNotContain(2, classes);
        var offsets = ClassPriorShift.Fit(logp, classes, 3);
        Assert.True(offsets[2] < -0.5f && offsets[2] > -ClassPriorShift.Limit, string.Join(", ", offsets));
    }

    [Fact]
    public void Fit_NoRows_IsNoShift() => Assert.Equal(new float[5], ClassPriorShift.Fit([], [], 5));

    [Fact]
    public void Fit_BadInput_SaysWhatIsWrong()
    {
        Assert.Contains("not finite", Assert.Throws<ArgumentException>(() => ClassPriorShift.Fit([0, float.NaN], [0], 2)).Message);
        Assert.Contains("outside the 2 classes", Assert.Throws<ArgumentOutOfRangeException>(() => ClassPriorShift.Fit([0, 0], [2], 2)).Message);
        Assert.Contains("1 x 2", Assert.Throws<ArgumentException>(() => ClassPriorShift.Fit([0, 0, 0], [1], 2)).Message);
    }

    public static TheoryData<string> EveryKind() => new() { "fc:16", "pool:64:16", "grid:2:16", "conv:3:1" };

    [Theory]
    [MemberData(nameof(EveryKind))]
    public void ShiftClassScores_EveryKind_AddsTheOffsetsBeforeTheLogSoftmax(string architecture)
    {
        var shape = new TensorShape(4, 8, 8);
        using var network = PredictorNetwork.Create(PredictorArchitecture.Parse(architecture), shape.Size, 5, shape);
        network.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var input = rand(3, shape.Size);
        var before = network.forward(input).clone();
        float[] offsets = [1.5f, -2f, 0f, 0.25f, -0.5f];
        network.ShiftClassScores(offsets);
        var expected = nn.functional.log_softmax(before + tensor(offsets), 1);
        Assert.True(network.forward(input).allclose(expected, atol: 1e-5));
        Assert.Throws<ArgumentException>(() => network.ShiftClassScores([1f, 2f]));
        Assert.Throws<ArgumentException>(() => network.ShiftClassScores([0, 0, float.PositiveInfinity, 0, 0]));
    }
}

public sealed class ClassMixTests
{
    private static ShadowRow Row(long sequence, int baseClass, int classes = 4)
    {
        var probabilities = new float[classes];
        probabilities[baseClass] = 1;
        return new ShadowRow(sequence, 0, baseClass, sampled: true, caches: 1) { BaseProbabilities = probabilities };
    }

    [Fact]
    public void Of_SharesOfTheBaseAnswers_SkippingUnlabelledRows()
    {
        var rows = new[] { Row(1, 0), Row(2, 0), Row(3, 2), Row(4, 3), new ShadowRow(5, 0, 1, sampled: true, caches: 1) };
        Assert.Equal([0.5, 0, 0.25, 0.25], ClassMix.Of(rows, 4));
        Assert.Equal(new double[4], ClassMix.Of([], 4));
    }

    [Fact]
    public void Distance_IsTotalVariation()
    {
        Assert.Equal(0, ClassMix.Distance([0.5, 0.5, 0], [0.5, 0.5, 0]));
        Assert.Equal(1, ClassMix.Distance([0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]));
        Assert.Equal(0.25, ClassMix.Distance([0.5, 0.25, 0.25], [0.25, 0.25, 0.5]), 12);
        Assert.Throws<ArgumentException>(() => ClassMix.Distance([1.0], [0.5, 0.5]));
    }

    [Fact]
    public void ChangedAbove_SeparatesTwoPhasesAndNotTwoSamplesOfOne()
    {
        // Samples of 150 rows as the workload's phases draw them: three popular classes take 90 %.
        double[] Phase(int[] popular, int seed)
        {
            var random = new Random(seed);
            var rows = Enumerable.Range(0, 150).Select(i =>
            {
                var label = random.NextDouble() < 0.9 ? popular[random.Next(3)] : random.Next(10);
                return Row(i, label, 10);
            });
            return ClassMix.Of(rows, 10);
        }
        for (var seed = 0; seed < 20; seed++)
        {
            Assert.True(ClassMix.Distance(Phase([4, 9, 7], seed), Phase([4, 9, 7], seed + 100)) <= ClassMix.ChangedAbove);
            Assert.True(ClassMix.Distance(Phase([4, 9, 7], seed), Phase([5, 0, 3], seed + 100)) > ClassMix.ChangedAbove);
        }
    }
}
