using Gati.MLNet.Inference;
using Gati.MLNet.Inference.Backends;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

/// <summary>
/// Early exit must skip work, not just pick an answer: an engine that ran every row through the whole network and
/// then chose would give the same answers, so these tests count the rows each block (TorchSharp) or segment (ONNX
/// Runtime) really computes.
/// </summary>
public sealed class SkippedWorkTests(CachesFixture fixture) : IClassFixture<CachesFixture>
{
    /// <summary>Rows that should reach layer <paramref name="layer"/>: those that did not exit at an earlier cache.</summary>
    private static int Reaching(EarlyExitPrediction[] answers, int layer) => answers.Count(a => a.ExitLayer == 0 || a.ExitLayer >= layer);

    [Fact]
    public void TorchSharpEngine_RowsThatExit_NeverRunTheLaterBlocks()
    {
        var images = fixture.Images(200).Select(i => new LearnedCachesTests.ImageInput { Image = i }).ToArray();
        var network = fixture.Base.Model.Network;
        var blocks = network.named_modules().Where(m => m.name.StartsWith("layer", StringComparison.Ordinal) && m.name.Count(c => c == '.') == 1)
            .Select(m => (nn.Module<Tensor, Tensor>)m.module).ToArray();
        Assert.Equal(network.LayerCount, blocks.Length);
        var rows = new long[blocks.Length];
        var hooks = blocks.Select((block, i) => block.register_forward_pre_hook((_, input) =>
        {
            Interlocked.Add(ref rows[i], input.shape[0]);
            return input;
        })).ToArray();
        try
        {
            using var engine = fixture.Context.Gati().CreateEarlyExitEngine<LearnedCachesTests.ImageInput, EarlyExitPrediction>(fixture.Caches,
                new EarlyExitEngineOptions { Backend = ExecutionBackend.TorchSharp });
            var answers = engine.Predict(images);
            Assert.True(answers.Count(a => a.ExitLayer == 3) > 0, "some rows must exit at the first cache for this test to mean anything");
            for (var layer = 1; layer <= network.LayerCount; layer++)
                Assert.True(Reaching(answers, layer) == rows[layer - 1], $"layer {layer}: {rows[layer - 1]} rows computed, {Reaching(answers, layer)} should have been");
        }
        finally
        {
            foreach (var hook in hooks) hook.remove();
        }
    }

    /// <summary>Counts the rows each segment of the wrapped backend runs on.</summary>
    private sealed class CountingBackend(IEarlyExitBackend inner, int caches, int classes) : IEarlyExitBackend
    {
        public long[] Rows { get; } = new long[caches + 1];

        public string Description => inner.Description;

        public string Device => inner.Device;

        public IEarlyExitCall Begin(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds) =>
            new Call(inner.Begin(segment, inputs, count, thresholds), this, classes);

        // Segment by segment, so that every segment's rows are seen.
        public bool TryRunOne(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit)
        {
            exit = -1;
            return false;
        }

        public SingleGraphTaps? TryRunOneTapped(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit)
        {
            exit = -1;
            return null;
        }

        public bool PrepareTapped() => false;

        public void Dispose() => inner.Dispose();

        private sealed class Call(IEarlyExitCall inner, CountingBackend owner, int classes) : IEarlyExitCall
        {
            public SegmentResult Run(int segment)
            {
                var result = inner.Run(segment);
                Interlocked.Add(ref owner.Rows[segment], result.Hits.IsEmpty ? result.Probabilities.Length / classes : result.Hits.Length);
                return result;
            }

            public void Keep(ReadOnlySpan<int> rows) => inner.Keep(rows);

            public ReadOnlySpan<float> Activation(int segment) => inner.Activation(segment);

            public void Dispose() => inner.Dispose();
        }
    }

    [Fact]
    public void OnnxRuntimeEngine_RowsThatExit_NeverRunTheLaterSegments()
    {
        var images = fixture.Images(200);
        var caches = fixture.Caches.Caches.ToArray();
        var classes = fixture.Caches.Config.ClassCount;
        var backend = new CountingBackend(OnnxRuntimeBackend.Create(fixture.Caches.BaseModel, caches, new EarlyExitEngineOptions { Device = "cpu" }), caches.Length, classes);
        using var engine = new EarlyExitEngine(fixture.Caches.BaseModel.Acquire(), backend, caches.Select(c => c.Share()).ToArray(), ExecutionBackend.OnnxRuntime);
        var flat = images.SelectMany(i => i).ToArray();
        var batch = engine.Run(flat, images.Length);
        var answers = batch.ExitLayer.Select(e => new EarlyExitPrediction { ExitLayer = e }).ToArray();
        Assert.True(answers.Count(a => a.ExitLayer == 3) > 0);
        // Segment s starts after cache s - 1: it runs on the rows that reached its first block.
        var firstLayers = new[] { 1 }.Concat(caches.Select(c => c.Layer + 1)).ToArray();
        for (var s = 0; s < backend.Rows.Length; s++)
            Assert.True(Reaching(answers, firstLayers[s]) == backend.Rows[s], $"segment {s}: {backend.Rows[s]} rows computed, {Reaching(answers, firstLayers[s])} should have been");
    }
}
