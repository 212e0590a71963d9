using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>One candidate cache as the optimizer sees it.</summary>
/// <param name="Index">Position among the candidates.</param>
/// <param name="Layer">Layer.</param>
/// <param name="Architecture">Predictor architecture.</param>
/// <param name="HitRate">Share of held-out rows it would answer if it were the only cache.</param>
/// <param name="Precision">Agreement with the base model among those rows.</param>
/// <param name="CostMs">Predictor + selector + decision time at batch 1, ms.</param>
/// <param name="CostBatchMs">The same at the measurement batch size, ms per batch.</param>
/// <param name="ParameterBytes">Memory of predictor and selector parameters.</param>
/// <param name="Threshold">The selector's exit threshold (several candidates may share networks and differ only here:
/// <see cref="Transforms.LearnedCachesTransformer.WithThresholdVariants"/>); NaN when not given.</param>
/// <param name="CalibrationPrecision">Precision of exits on the calibration rows the threshold was set on; NaN when not given.</param>
public sealed record CacheCandidate(int Index, int Layer, PredictorArchitecture Architecture, double HitRate, double Precision, double CostMs, double CostBatchMs, long ParameterBytes,
    float Threshold = float.NaN, double CalibrationPrecision = double.NaN)
{
    /// <summary>The candidate in a plan's words: layer, predictor and, when known, the exit threshold.</summary>
    public string Describe() => float.IsNaN(Threshold)
        ? $"layer {Layer} {Architecture}"
        : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"layer {Layer} {Architecture} (threshold {Threshold:G4}, calibrated precision {CalibrationPrecision:P1})");
}

/// <summary>
/// What the cache optimizer decides from, measured on held-out data on the serving device: for every candidate
/// cache and held-out row, whether its selector exits and whether its predictor agrees with the base model; and
/// the time of the base model's parts (stem, each block, head) and of each candidate, at batch 1 and at a batch size.
/// </summary>
public sealed class CacheMeasurements
{
    internal CacheMeasurements(IReadOnlyList<CacheCandidate> candidates, bool[][] exits, bool[][] correct, double[] blockMs, double[] blockBatchMs,
        int batchSize, string device, ExecutionBackend backend = ExecutionBackend.TorchSharp, long baseParameterBytes = 0)
    {
        BaseParameterBytes = baseParameterBytes;
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

    /// <summary>Base model parts at batch 1, ms: [p] for p &lt; L computes cut point p + 1 from cut point p (0: the input); [L] is the head.</summary>
    public IReadOnlyList<double> BlockMs { get; }

    /// <summary>Base model parts at <see cref="BatchSize"/>, ms per batch.</summary>
    public IReadOnlyList<double> BlockBatchMs { get; }

    /// <summary>The batch size of the second set of timings.</summary>
    public int BatchSize { get; }

    /// <summary>Held-out rows measured.</summary>
    public int Rows => Exits.Length == 0 ? 0 : Exits[0].Length;

    /// <summary>The device timed.</summary>
    public string Device { get; }

    /// <summary>The base model's parameter memory (float32), which the optimizer's default memory budget follows.</summary>
    public long BaseParameterBytes { get; }

    /// <summary>The runtime timed: the latency model holds for engines on this backend.</summary>
    public ExecutionBackend Backend { get; }

    /// <summary>Full-model time at batch 1, ms.</summary>
    public double FullMs => BlockMs.Sum();

    /// <summary>True when every selector was replaced by the oracle (<see cref="WithOracleSelectors"/>).</summary>
    public bool OracleSelectors { get; private init; }

    /// <summary>
    /// The same predictors and timings with an oracle for every selector: a cache exits exactly on the rows where its
    /// predictor's label equals the base model's. No selector can do better with these predictors, so the optimizer's
    /// plan on these measurements (always at 100 % agreement) is the ceiling the selectors fall short of.
    /// </summary>
    public CacheMeasurements WithOracleSelectors()
    {
        var candidates = Candidates.Select((c, i) =>
        {
            var hits = Correct[i].Count(x => x);
            return c with { HitRate = (double)hits / Math.Max(1, Rows), Precision = hits == 0 ? double.NaN : 1.0 };
        }).ToArray();
        return new CacheMeasurements(candidates, Correct, Correct, [.. BlockMs], [.. BlockBatchMs], BatchSize, Device, Backend, BaseParameterBytes)
        {
            OracleSelectors = true,
        };
    }

    /// <summary>Share of the measured rows on which candidate <paramref name="index"/>'s predictor agrees with the base model.</summary>
    public double PredictorAgreement(int index) => Correct[index].Count(x => x) / (double)Math.Max(1, Rows);

    /// <summary>
    /// Runs every candidate of <paramref name="candidates"/> on every row of <paramref name="heldOut"/> (an image column
    /// as the base model reads it) and times the base model's parts and each candidate on random inputs.
    /// </summary>
    /// <param name="candidates">The base model with its candidate caches (several per cut point allowed).</param>
    /// <param name="heldOut">Held-out images, never used to train predictors.</param>
    /// <param name="batchSize">Batch size of the second timing set (1 = batch-1 only).</param>
    /// <param name="timingRuns">Timed repetitions per part (median kept).</param>
    /// <param name="backend">The runtime to time (the one the chosen caches will be served on); ONNX Runtime by default, on the CPU.</param>
    /// <param name="engineOptions">The serving engine's settings (threads, single graph) to time with; the defaults when null.</param>
    public static CacheMeasurements Measure(LearnedCachesTransformer candidates, IDataView heldOut, int batchSize = 64, int timingRuns = 50,
        ExecutionBackend backend = ExecutionBackend.OnnxRuntime, EarlyExitEngineOptions? engineOptions = null)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        ArgumentNullException.ThrowIfNull(heldOut);
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Must be positive.");
        if (timingRuns < 1) throw new ArgumentOutOfRangeException(nameof(timingRuns), timingRuns, "Must be positive.");
        var caches = candidates.Caches;
        if (caches.Count == 0) throw new ArgumentException("No candidate caches to measure.", nameof(candidates));
        var baseModel = candidates.BaseModel;
        var descriptor = Inference.Backends.ExecutionBackends.For(backend);
        descriptor.EnsureSupports(baseModel);
        // The process-wide runtime settings come from the engine options, before feature extraction opens a session.
        var serving = engineOptions ?? new EarlyExitEngineOptions();
        descriptor.Initialize(serving);
        var (exits, correct) = Decisions(candidates, heldOut);

        var batchRuns = Math.Max(5, timingRuns / 5);
        // Timed on the CPU with the serving engine's session settings.
        var timingOptions = serving.Clone();
        timingOptions.Backend = backend;
        timingOptions.Device = "cpu";
        var timing = descriptor.Timing(baseModel, timingOptions);
        double[] Parts(int batch, int runs) => timing.Parts(batch, runs);
        double Cache(LearnedCache cache, int batch, int runs) => timing.Cache(cache, batch, runs);
        var blockMs = Parts(1, timingRuns);
        var blockBatchMs = batchSize == 1 ? blockMs : Parts(batchSize, batchRuns);
        var list = new List<CacheCandidate>();
        // Candidates that differ only in their threshold run the same networks: timed once.
        var timed = new Dictionary<(object, object), (double One, double Batch)>();
        for (var i = 0; i < caches.Count; i++)
        {
            var cache = caches[i];
            if (!timed.TryGetValue((cache.Predictor, cache.Selector), out var cost))
            {
                var first = Cache(cache, 1, timingRuns);
                timed[(cache.Predictor, cache.Selector)] = cost = (first, batchSize == 1 ? first : Cache(cache, batchSize, batchRuns));
            }
            var (one, batch) = cost;
            var hits = exits[i].Count(e => e);
            var good = exits[i].Zip(correct[i]).Count(p => p.First && p.Second);
            list.Add(new CacheCandidate(i, cache.Layer, cache.PredictorArchitecture, (double)hits / exits[i].Length,
                hits == 0 ? double.NaN : (double)good / hits, one, batch, cache.ParameterBytes, cache.Calibration.Threshold, cache.Calibration.Precision));
        }
        return new CacheMeasurements(list, exits, correct, blockMs, blockBatchMs, batchSize, timing.Device, backend, baseModel.ParameterCount * sizeof(float));
    }

    /// <summary>
    /// For every candidate and held-out row: does its selector exit, and does its predictor agree with the base model.
    /// Features come from the base model (its feature extraction), the decisions from each cache's networks.
    /// </summary>
    private static (bool[][] Exits, bool[][] Correct) Decisions(LearnedCachesTransformer candidates, IDataView heldOut)
    {
        var caches = candidates.Caches;
        var baseModel = candidates.BaseModel;
        var layers = caches.Select(c => c.Layer).Distinct().Order().ToArray();
        var sizes = layers.Select(l => baseModel.CutPoint(l).Shape.Size).ToArray();
        var exits = caches.Select(_ => new List<bool>()).ToArray();
        var correct = caches.Select(_ => new List<bool>()).ToArray();
        var reader = new VectorBatchReader(heldOut, [candidates.ImageColumnName], null, poolRows: 1);
        // About 256 MB of features per chunk: 224 x 224 inputs have 200,000 values per row at their first cut points.
        var chunk = (int)Math.Clamp((256L << 20) / (4L * Math.Max(1, sizes.Sum(s => (long)s))), 8, 256);
        var buffers = reader.AllocateBuffers(chunk);
        var unused = new long[chunk];
        var k = baseModel.ClassCount;
        var features = sizes.Select(size => new float[chunk * size]).ToArray();
        var predicted = new uint[chunk];
        using var extraction = baseModel.OpenExtraction(layers.Select(l => new Models.FeatureRequest(l, Models.FeatureReduction.None)).ToArray(), "auto");
        foreach (var count in reader.Read(chunk, buffers, unused, shuffle: null))
        {
            extraction.Extract(buffers[0], count, features.Cast<float[]?>().ToArray(), null, predicted);
            // Candidates that share networks (threshold variants) are run once; each applies its own threshold.
            foreach (var group in Enumerable.Range(0, caches.Count).GroupBy(i => (caches[i].Predictor, caches[i].Selector)))
            {
                var cache = caches[group.First()];
                var f = Array.IndexOf(layers, cache.Layer);
                using (cache.Predictor.Use())
                using (cache.Selector.Use())
                using (var scope = NewDisposeScope())
                using (no_grad())
                {
                    var device = cache.Predictor.Device;
                    var x = tensor(features[f], [chunk, sizes[f]]).narrow(0, 0, count).to(device);
                    var (logp, probability, _) = cache.Lookup(x, cache.Calibration.Threshold);
                    var label = logp.argmax(1).cpu().data<long>().ToArray();
                    var p = probability.cpu().data<float>().ToArray();
                    foreach (var i in group)
                    {
                        // float32 comparison, as Lookup and the ONNX graphs make it
                        var threshold = caches[i].Calibration.Threshold;
                        for (var r = 0; r < count; r++)
                        {
                            exits[i].Add(Policy.ExitSimulation.Fires(p[r], threshold));
                            correct[i].Add(label[r] + 1 == predicted[r]);
                        }
                    }
                }
            }
        }
        if (exits[0].Count == 0) throw new ArgumentException("The held-out data has no rows.", nameof(heldOut));
        return (exits.Select(e => e.ToArray()).ToArray(), correct.Select(c => c.ToArray()).ToArray());
    }
}
