using System.Diagnostics;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Inference;

/// <summary>One candidate cache as the optimizer sees it.</summary>
/// <param name="Index">Position among the candidates.</param>
/// <param name="Layer">Layer.</param>
/// <param name="Architecture">Predictor architecture.</param>
/// <param name="HitRate">Share of held-out rows it would answer if it were the only cache.</param>
/// <param name="Precision">Agreement with the base model among those rows.</param>
/// <param name="CostMs">Predictor + selector + decision time at batch 1, ms.</param>
/// <param name="CostBatchMs">The same at the measurement batch size, ms per batch.</param>
/// <param name="ParameterBytes">Memory of predictor and selector parameters.</param>
public sealed record CacheCandidate(int Index, int Layer, PredictorArchitecture Architecture, double HitRate, double Precision, double CostMs, double CostBatchMs, long ParameterBytes);

/// <summary>
/// What the cache optimizer decides from, measured on held-out data on the serving device: for every candidate
/// cache and held-out row, whether its selector exits and whether its predictor agrees with the base model; and
/// the time of the base model's parts (stem, each block, head) and of each candidate, at batch 1 and at a batch size.
/// </summary>
public sealed class CacheMeasurements
{
    internal CacheMeasurements(IReadOnlyList<CacheCandidate> candidates, bool[][] exits, bool[][] correct, double[] blockMs, double[] blockBatchMs,
        int batchSize, string device, ExecutionBackend backend = ExecutionBackend.TorchSharp)
    {
        Backend = backend;
        Candidates = candidates;
        Exits = exits;
        Correct = correct;
        BlockMs = blockMs;
        BlockBatchMs = blockBatchMs;
        BatchSize = batchSize;
        Device = device;
    }

    /// <summary>Candidate caches.</summary>
    public IReadOnlyList<CacheCandidate> Candidates { get; }

    /// <summary>[candidate][row]: the selector exits.</summary>
    internal bool[][] Exits { get; }

    /// <summary>[candidate][row]: the predictor's label equals the base model's.</summary>
    internal bool[][] Correct { get; }

    /// <summary>Base model parts at batch 1, ms: [0] stem, [1..L] blocks, [L + 1] head.</summary>
    public IReadOnlyList<double> BlockMs { get; }

    /// <summary>Base model parts at <see cref="BatchSize"/>, ms per batch.</summary>
    public IReadOnlyList<double> BlockBatchMs { get; }

    /// <summary>The batch size of the second set of timings.</summary>
    public int BatchSize { get; }

    /// <summary>Held-out rows measured.</summary>
    public int Rows => Exits.Length == 0 ? 0 : Exits[0].Length;

    /// <summary>The device timed.</summary>
    public string Device { get; }

    /// <summary>The runtime timed: the latency model holds for engines on this backend.</summary>
    public ExecutionBackend Backend { get; }

    /// <summary>Full-model time at batch 1, ms.</summary>
    public double FullMs => BlockMs.Sum();

    /// <summary>
    /// Runs every candidate of <paramref name="candidates"/> on every row of <paramref name="heldOut"/> (an image column
    /// as the base model reads it) and times the base model's parts and each candidate on random inputs.
    /// </summary>
    /// <param name="candidates">The base model with its candidate caches (several per layer allowed).</param>
    /// <param name="heldOut">Held-out images, never used to train predictors.</param>
    /// <param name="batchSize">Batch size of the second timing set (1 = batch-1 only).</param>
    /// <param name="timingRuns">Timed repetitions per part (median kept).</param>
    /// <param name="backend">The runtime to time (the one the chosen caches will be served on); ONNX Runtime by default, on the CPU.</param>
    public static CacheMeasurements Measure(LearnedCachesTransformer candidates, IDataView heldOut, int batchSize = 64, int timingRuns = 50,
        ExecutionBackend backend = ExecutionBackend.OnnxRuntime)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        ArgumentNullException.ThrowIfNull(heldOut);
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Must be positive.");
        if (timingRuns < 1) throw new ArgumentOutOfRangeException(nameof(timingRuns), timingRuns, "Must be positive.");
        var caches = candidates.Caches;
        if (caches.Count == 0) throw new ArgumentException("No candidate caches to measure.", nameof(candidates));
        var shared = candidates.BaseNetwork;
        var network = shared.Module;
        var shape = network.Config.InputShape;
        var device = shared.Device;
        var exits = caches.Select(_ => new List<bool>()).ToArray();
        var correct = caches.Select(_ => new List<bool>()).ToArray();
        var layers = caches.Select(c => c.Layer).Distinct().Order().ToArray();

        var reader = new VectorBatchReader(heldOut, [candidates.ImageColumnName], null, poolRows: 1);
        const int chunk = 256;
        var buffers = reader.AllocateBuffers(chunk);
        var unused = new long[chunk];
        using (shared.Use())
        {
            using var noGrad = no_grad();
            foreach (var count in reader.Read(chunk, buffers, unused, shuffle: null))
            {
                using var scope = NewDisposeScope();
                var x = tensor(buffers[0], shape.WithBatch(chunk)).narrow(0, 0, count).to(device);
                var (logits, outputs) = network.ForwardWithLayers(x, layers);
                var baseLabel = logits.argmax(1);
                for (var i = 0; i < caches.Count; i++)
                {
                    var cache = caches[i];
                    var features = outputs[Array.IndexOf(layers, cache.Layer)].flatten(1);
                    var (logp, hits) = cache.Lookup(features);
                    var hit = hits.cpu().data<bool>().ToArray();
                    var agree = logp.argmax(1).eq(baseLabel).cpu().data<bool>().ToArray();
                    exits[i].AddRange(hit);
                    correct[i].AddRange(agree);
                }
            }
            if (exits[0].Count == 0) throw new ArgumentException("The held-out data has no rows.", nameof(heldOut));

            var batchRuns = Math.Max(5, timingRuns / 5);
            var onnx = new EarlyExitEngineOptions { Backend = backend, Device = "cpu" };
            double[] Parts(int batch, int runs) => backend == ExecutionBackend.OnnxRuntime
                ? Backends.OnnxRuntimeTiming.Parts(network, batch, runs, onnx)
                : TimeParts(network, device, shape, batch, runs);
            double Cache(LearnedCache cache, int batch, int runs) => backend == ExecutionBackend.OnnxRuntime
                ? Backends.OnnxRuntimeTiming.Cache(cache, network.Config.ClassCount, batch, runs, onnx)
                : TimeCache(cache, device, cache.Predictor.Module.InputSize, batch, runs);
            var blockMs = Parts(1, timingRuns);
            var blockBatchMs = batchSize == 1 ? blockMs : Parts(batchSize, batchRuns);
            var list = new List<CacheCandidate>();
            for (var i = 0; i < caches.Count; i++)
            {
                var cache = caches[i];
                var one = Cache(cache, 1, timingRuns);
                var batch = batchSize == 1 ? one : Cache(cache, batchSize, batchRuns);
                var hits = exits[i].Count(e => e);
                var good = exits[i].Zip(correct[i]).Count(p => p.First && p.Second);
                list.Add(new CacheCandidate(i, cache.Layer, cache.PredictorArchitecture, (double)hits / exits[i].Count,
                    hits == 0 ? double.NaN : (double)good / hits, one, batch, cache.ParameterBytes));
            }
            return new CacheMeasurements(list, exits.Select(e => e.ToArray()).ToArray(), correct.Select(c => c.ToArray()).ToArray(),
                blockMs, blockBatchMs, batchSize, backend == ExecutionBackend.OnnxRuntime ? "cpu" : device.ToString(), backend);
        }
    }

    private static double[] TimeParts(Models.ResNet network, Device device, Models.TensorShape shape, int batch, int runs)
    {
        var parts = new double[network.LayerCount + 2];
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = torch.randn(shape.WithBatch(batch), device: device);
        var inputs = new Tensor[network.LayerCount + 2];
        inputs[0] = x;
        inputs[1] = network.Stem(x);
        for (var layer = 1; layer <= network.LayerCount; layer++) inputs[layer + 1] = network.Block(layer, inputs[layer]);
        parts[0] = Median(runs, device, () => network.Stem(x));
        for (var layer = 1; layer <= network.LayerCount; layer++)
        {
            var input = inputs[layer];
            parts[layer] = Median(runs, device, () => network.Block(layer, input));
        }
        var last = inputs[network.LayerCount + 1];
        parts[network.LayerCount + 1] = Median(runs, device, () => nn.functional.softmax(network.Head(last), 1).cpu());
        return parts;
    }

    private static double TimeCache(LearnedCache cache, Device device, int size, int batch, int runs)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = torch.randn(batch, size, device: device);
        return Median(runs, device, () =>
        {
            // The decision needs the flags on the host: include that sync, as the engine does.
            return cache.Lookup(x).Hits.cpu();
        });
    }

    private static double Median(int runs, Device device, Func<Tensor> work)
    {
        for (var i = 0; i < 3; i++)
        {
            using var warm = NewDisposeScope();
            work();
        }
        var times = new double[runs];
        for (var i = 0; i < runs; i++)
        {
            using var scope = NewDisposeScope();
            var start = Stopwatch.GetTimestamp();
            work();
            if (device.type == DeviceType.CUDA) torch.cuda.synchronize(device);
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(times);
        return times[runs / 2];
    }
}
