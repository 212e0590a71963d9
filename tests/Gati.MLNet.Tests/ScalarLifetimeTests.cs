using Gati.MLNet.Data;
using Gati.MLNet.Models;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Torch;
using Gati.MLNet.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

/// <summary>
/// TorchSharp 0.107 frees a Scalar in its finalizer, and an implicitly converted Scalar can be collected while
/// libtorch still reads it (see <see cref="Scalars"/>). These tests run the repeated paths — distillation loss, SGD,
/// residual blocks, selector thresholds, loss sums — while another thread forces collections and finalizers
/// without pause. With an implicit conversion on one of these paths the test process dies within a second or two
/// (reproduced: <c>a + b</c> in such a loop aborts with "Expected false to be true ... toFloat").
/// </summary>
[Collection(NativeMemoryCollection.Name)]
public sealed class ScalarLifetimeTests
{
    public ScalarLifetimeTests() => TorchRuntime.EnsureInitialized();

    [Fact]
    public void Normalize_EqualsTorchSharpsBatchNormForward_InTrainingAndEval()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var theirs = nn.BatchNorm2d(4);
        var ours = nn.BatchNorm2d(4);
        ours.load_state_dict(theirs.state_dict());
        theirs.train();
        ours.train();
        for (var step = 0; step < 3; step++)
        {
            var x = randn(8, 4, 5, 5);
            Assert.True(theirs.forward(x).allclose(ours.Normalize(x), rtol: 0, atol: 0));
        }
        Assert.True(theirs.running_mean!.allclose(ours.running_mean!, rtol: 0, atol: 0));
        Assert.True(theirs.running_var!.allclose(ours.running_var!, rtol: 0, atol: 0));
        Assert.Equal(3L, ours.num_batches_tracked!.item<long>());
        Assert.Equal(theirs.num_batches_tracked!.item<long>(), ours.num_batches_tracked!.item<long>());
        theirs.eval();
        ours.eval();
        var y = randn(2, 4, 5, 5);
        Assert.True(theirs.forward(y).allclose(ours.Normalize(y), rtol: 0, atol: 0));
    }

    [Fact]
    public void TrainingAndInferencePaths_SurviveConcurrentFinalization()
    {
        using var stop = new CancellationTokenSource();
        var collector = new Thread(() =>
        {
            // Generation-0 collections: they find the just-dropped Scalars (young objects) and cost the same whatever
            // else the test process holds, so the test takes seconds even next to large fixtures.
            while (!stop.IsCancellationRequested)
            {
                GC.Collect(0);
                GC.WaitForPendingFinalizers();
            }
        }) { IsBackground = true };

        using var predictor = SeededInit.Create(1, () => PredictorNetwork.Create(PredictorArchitecture.Conv(), 64, 10));
        using var selector = SeededInit.Create(2, () => new SelectorNetwork(new SelectorArchitecture(SelectorInput.Sorted, 8), 10));
        using var net = SeededInit.Create(3, () => new ResNet(new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 8, 8), 10, 2)));
        using var optimizer = new SafeSgd(predictor.parameters(), 0.05, 0.9, weightDecay: 5e-4);
        using var features = rand(16, 64);
        using var teacher = randn(16, 10);
        using var hard = teacher.argmax(1);
        using var images = rand(2, 1, 8, 8);
        using var lossSum = zeros(1, dtype: ScalarType.Float64);
        using var hits = zeros(1, dtype: ScalarType.Int64);
        net.eval();

        var steps = 0;
        collector.Start();
        try
        {
            // Up to 1,500 steps or 30 seconds, whichever comes first (test projects run side by side on CI's 2 cores):
            // the point is the overlap with collections.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            for (; steps < 1500 && clock.Elapsed < TimeSpan.FromSeconds(30); steps++)
            {
                using var scope = NewDisposeScope();
                var loss = DistillationLoss.Compute(predictor.forward(features), teacher, hard, 0.5, 6);
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                lossSum.PlusScaledInPlace(loss.detach().to(ScalarType.Float64), 16);
                using (no_grad())
                {
                    var logits = net.forward(images);
                    var hit = selector.HitProbability(nn.functional.log_softmax(logits, 1)).AtLeast(0.5);
                    hits.PlusInPlace(hit.sum());
                }
            }
        }
        finally
        {
            stop.Cancel();
            collector.Join();
        }
        Assert.True(steps >= 20, $"Only {steps} steps ran next to the collector.");
        Assert.True(double.IsFinite(lossSum.item<double>()));
        Assert.InRange(hits.item<long>(), 0, 3000);
    }

    [Fact]
    public void SafeSgd_MatchesTorchSharpSgd_AndResumesFromItsStateDict()
    {
        using var a = SeededInit.Create(5, () => nn.Linear(6, 3));
        using var b = SeededInit.Create(5, () => nn.Linear(6, 3));
        using var x = SeededInit.Create(6, () => randn(8, 6));
        using var reference = torch.optim.SGD(a.parameters(), 0.05, 0.9, weight_decay: 5e-4);
        using var safe = new SafeSgd(b.parameters(), 0.05, 0.9, weightDecay: 5e-4);
        for (var step = 0; step < 5; step++)
        {
            Step(a, reference, x);
            Step(b, safe, x);
        }
        AssertSameParameters(a, b);

        // The state dict (momentum buffers included) round-trips: a resumed optimizer continues identically.
        using var c = SeededInit.Create(7, () => nn.Linear(6, 3));
        c.load_state_dict(b.state_dict());
        using var resumed = new SafeSgd(c.parameters(), 0.05, 0.9, weightDecay: 5e-4);
        using (var buffer = new MemoryStream())
        {
            using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true)) safe.save_state_dict(writer);
            buffer.Position = 0;
            using var reader = new BinaryReader(buffer);
            resumed.load_state_dict(reader);
        }
        Step(a, reference, x);
        Step(b, safe, x);
        Step(c, resumed, x);
        AssertSameParameters(a, b);
        AssertSameParameters(b, c);

        // A checkpoint section written by TorchSharp's SGD (Gati builds before SafeSgd) resumes into SafeSgd.
        using var d = SeededInit.Create(8, () => nn.Linear(6, 3));
        d.load_state_dict(a.state_dict());
        using var fromOld = new SafeSgd(d.parameters(), 0.05, 0.9, weightDecay: 5e-4);
        TrainingCheckpoint.LoadOptimizer(TrainingCheckpoint.OptimizerBytes(reference), fromOld);
        Step(a, reference, x);
        Step(d, fromOld, x);
        AssertSameParameters(a, d);
    }

    private static void Step(nn.Module<Tensor, Tensor> model, torch.optim.Optimizer optimizer, Tensor x)
    {
        using var scope = NewDisposeScope();
        optimizer.zero_grad();
        model.forward(x).pow(2).sum().backward();
        optimizer.step();
    }

    private static void AssertSameParameters(nn.Module a, nn.Module b)
    {
        foreach (var ((name, pa), (_, pb)) in a.named_parameters().Zip(b.named_parameters()))
            Assert.True(pa.allclose(pb, rtol: 1e-6, atol: 1e-7), $"parameter {name} differs");
    }
}
