using System.Diagnostics;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Models;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Torch;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

/// <summary>
/// Long loops must keep native memory flat: every forward and step runs inside a DisposeScope. Two checks per
/// loop: no TorchSharp tensor created by the loop on this thread is left alive (a tensor left to the finalizer
/// is a leak on a GPU, where the GC never feels the memory pressure), and resident memory, measured after a
/// collection so that managed garbage does not count, stays within a small bound.
/// </summary>
[Collection(NativeMemoryCollection.Name)]
public sealed class NativeMemoryTests(SmallModelFixture fixture) : IClassFixture<SmallModelFixture>
{
    private static long ResidentBytesAfterCollection()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }

    private static long GrowthOverLoops(Action iteration, int warmup, int iterations)
    {
        for (var i = 0; i < warmup; i++) iteration();
        var liveBefore = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
        var before = ResidentBytesAfterCollection();
        for (var i = 0; i < iterations; i++) iteration();
        var liveAfter = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
        Assert.True(liveAfter == liveBefore, $"{liveAfter - liveBefore} tensors left alive after {iterations} iterations");
        return ResidentBytesAfterCollection() - before;
    }

    [Fact]
    public void Transform_ScoringManyBatches_KeepsNativeMemoryFlat()
    {
        var data = fixture.Context.Data.TakeRows(fixture.Test, 256);
        void Pass()
        {
            var scored = fixture.Model.Transform(data);
            using var cursor = scored.GetRowCursor([scored.Schema["Score"]]);
            var getter = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
            VBuffer<float> value = default;
            while (cursor.MoveNext()) getter(ref value);
        }
        // 40 passes x 4 batches of 64: leaking each batch's activations (~1.5 MB) would grow by >200 MB.
        var growth = GrowthOverLoops(Pass, warmup: 5, iterations: 40);
        Assert.True(growth < 32L << 20, $"resident memory grew by {growth >> 20} MB over 160 batches");
    }

    [Fact]
    public void TrainingSteps_ManyIterations_KeepNativeMemoryFlat()
    {
        TorchRuntime.EnsureInitialized();
        torch.manual_seed(0);
        using var net = new ResNet(new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 28, 28), 10, 8));
        using var optimizer = torch.optim.SGD(net.parameters(), 0.01, 0.9);
        using var x = torch.randn(32, 1, 28, 28);
        using var y = torch.randint(0, 10, [32]);
        void Step()
        {
            using var scope = NewDisposeScope();
            var loss = nn.functional.cross_entropy(net.forward(x), y);
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
        }
        var growth = GrowthOverLoops(Step, warmup: 10, iterations: 150);
        Assert.True(growth < 32L << 20, $"resident memory grew by {growth >> 20} MB over 150 steps");
    }
}

/// <summary>Resident-memory checks must not run beside other tests (xunit runs test classes in parallel).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NativeMemoryCollection
{
    public const string Name = "Native memory (runs alone)";
}

[Collection(NativeMemoryCollection.Name)]
public sealed class EngineMemoryTests(CachesFixture fixture) : IClassFixture<CachesFixture>
{
    [Fact]
    public void EarlyExitEngine_ManyPredictions_KeepNativeMemoryFlat()
    {
        using var engine = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches);
        var images = fixture.Images(50).Select(i => new LearnedCachesTests.ImageInput { Image = i }).ToArray();
        // Warm up past the allocator's and the fixture's own transients before taking the baseline.
        for (var i = 0; i < 3000; i++) engine.Predict(images[i % images.Length]);
        for (var i = 0; i < 20; i++) engine.Predict(images);
        var live = TorchSharp.DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
        GC.Collect();
        GC.WaitForPendingFinalizers();
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        var before = process.WorkingSet64;
        for (var i = 0; i < 5000; i++) engine.Predict(images[i % images.Length]);
        for (var i = 0; i < 100; i++) engine.Predict(images);
        Assert.Equal(live, TorchSharp.DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        process.Refresh();
        Assert.True(process.WorkingSet64 - before < 48L << 20, $"resident memory grew by {(process.WorkingSet64 - before) >> 20} MB over 10,000 predictions");
    }

    [Fact]
    public void TappedSingleGraph_ManyCalls_FreesEveryCallsOutputs()
    {
        // Each tapped call's outputs (every reached cache's activation) are allocated by ONNX Runtime and freed with the
        // taps: 25,000 calls left undisposed would hold over 300 MB here (the finalizers free only some of it in time:
        // without the dispose, resident memory grew by 113 MB).
        var caches = fixture.Caches.Caches;
        using var backend = Inference.Backends.OnnxRuntimeBackend.Create(fixture.Caches.BaseModel, caches,
            new EarlyExitEngineOptions { Backend = ExecutionBackend.OnnxRuntime, Device = "cpu" });
        var thresholds = caches.Select(c => (float)c.Calibration.Threshold).ToArray();
        var images = fixture.Images(50).ToArray();
        var probabilities = new float[fixture.Caches.BaseModel.ClassCount];
        var kept = 0L;
        void Call(int i)
        {
            using var taps = backend.TryRunOneTapped(images[i % images.Length], thresholds, probabilities, out _)!;
            for (var c = 0; c < caches.Count; c++) kept += taps.Activation(c).Length;
        }
        for (var i = 0; i < 2000; i++) Call(i);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        var before = process.WorkingSet64;
        kept = 0;
        for (var i = 0; i < 25000; i++) Call(i);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        process.Refresh();
        Assert.True(kept * sizeof(float) > 3 * (48L << 20), $"the calls handed out only {(kept * sizeof(float)) >> 20} MB: too little to show a leak");
        Assert.True(process.WorkingSet64 - before < 48L << 20, $"resident memory grew by {(process.WorkingSet64 - before) >> 20} MB over 25,000 tapped calls");
    }

}
