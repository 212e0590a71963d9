using System.Diagnostics;
using Gati.MLNet.Inference.Backends;
using Gati.MLNet.Models;

namespace Gati.MLNet.Inference;

/// <summary>
/// Early exit over an execution backend: segment by segment, rows whose cache hits leave the batch with the
/// predictor's answer and the batch is compacted; rows that reach the end get the base model's answer. Skipped
/// blocks are never computed. Safe for concurrent callers (the backend decides whether calls run in parallel), and
/// Dispose waits for calls in flight instead of freeing native networks under them.
/// </summary>
internal sealed class EarlyExitEngine : IDisposable
{
    private readonly IEarlyExitBackend _backend;
    private readonly LearnedCache[] _caches;
    private readonly float[] _thresholds;
    private long _sequence;
    private readonly object _gate = new();
    private int _inFlight;
    private bool _disposed;

    internal EarlyExitEngine(BaseModel baseModel, IEarlyExitBackend backend, LearnedCache[] caches, ExecutionBackend kind)
    {
        BaseModel = baseModel;
        InputShape = baseModel.InputShape;
        ClassCount = baseModel.ClassCount;
        _backend = backend;
        _caches = caches;
        _thresholds = caches.Select(c => (float)c.Calibration.Threshold).ToArray();
        Backend = kind;
    }

    /// <summary>Checks the caches against the base model and builds the engine on the chosen backend.</summary>
    /// <param name="baseModel">The base model (the engine takes one more hold on it).</param>
    /// <param name="caches">At most one cache per cut point.</param>
    /// <param name="options">Backend and device.</param>
    public static EarlyExitEngine Create(BaseModel baseModel, IReadOnlyList<LearnedCache> caches, EarlyExitEngineOptions options)
    {
        var seen = new HashSet<int>();
        foreach (var cache in caches)
        {
            var cut = baseModel.CutPoint(cache.Layer);
            if (!seen.Add(cache.Layer))
                throw new ArgumentException($"Two caches on layer {cache.Layer}: choose one per layer first (CacheOptimizer / gati optimize).", nameof(caches));
            if (cache.InputSize != cut.Shape.Size)
                throw new ArgumentException($"The layer-{cache.Layer} predictor reads {cache.InputSize} values but the base model's {cut} has {cut.Shape.Size}.", nameof(caches));
            if (cache.Classes != baseModel.ClassCount)
                throw new ArgumentException($"The layer-{cache.Layer} predictor has {cache.Classes} classes, the base model {baseModel.ClassCount}.", nameof(caches));
        }
        var ordered = caches.OrderBy(c => c.Layer).ToArray();
        var held = baseModel.Acquire();
        try
        {
            IEarlyExitBackend backend = options.Backend switch
            {
                ExecutionBackend.TorchSharp => new TorchSharpBackend(held as ResNetBaseModel
                    ?? throw new NotSupportedException($"The TorchSharp backend runs Gati's own ResNets; {baseModel.Description} is served by ONNX Runtime (Backend = OnnxRuntime)."), ordered),
                _ => OnnxRuntimeBackend.Create(held, ordered, options),
            };
            var shares = ordered.Select(c => c.Share()).ToArray();
            return new EarlyExitEngine(held, backend, shares, options.Backend);
        }
        catch
        {
            held.Release();
            throw;
        }
    }

    /// <summary>The base model served.</summary>
    public BaseModel BaseModel { get; }

    /// <summary>[C, H, W] of the inputs.</summary>
    public TensorShape InputShape { get; }

    /// <summary>Number of classes.</summary>
    public int ClassCount { get; }

    public Data.ChannelNormalization? InputNormalization => BaseModel.InputNormalization;

    public IReadOnlyList<string> ClassNames => BaseModel.ClassNames;

    public IReadOnlyList<LearnedCache> Caches => _caches;

    public ExecutionBackend Backend { get; }

    public string BackendDescription => _backend.Description;

    public string Device => _backend.Device;

    /// <summary>
    /// The online component that shadows served requests (null: none). Needs a backend that exposes activations
    /// (ONNX Runtime on the CPU).
    /// </summary>
    internal Online.IShadowTap? Shadow
    {
        get => Volatile.Read(ref _shadow);
        set
        {
            if (value is not null && !ExposesActivations)
                throw new NotSupportedException($"Shadowing served requests needs activations from the backend; {_backend.Description} keeps them to itself. Use the ONNX Runtime backend on the CPU.");
            Volatile.Write(ref _shadow, value);
        }
    }

    private Online.IShadowTap? _shadow;

    /// <summary>Whether this backend can hand out the activations it computed (for shadow rows).</summary>
    internal bool ExposesActivations => Backend == ExecutionBackend.OnnxRuntime && Device == "cpu";

    /// <summary>The exit threshold in force for each cache (in layer order).</summary>
    public IReadOnlyList<float> Thresholds => _thresholds;

    /// <summary>
    /// Moves the exit threshold of the cache on <paramref name="layer"/> for the calls that start from now on (no new
    /// sessions: the segment graphs read thresholds as inputs). +∞ turns the cache off.
    /// </summary>
    public void SetThreshold(int layer, float threshold)
    {
        if (float.IsNaN(threshold)) throw new ArgumentOutOfRangeException(nameof(threshold), threshold, "A threshold must be a number (+Infinity turns the cache off).");
        var index = Array.FindIndex(_caches, c => c.Layer == layer);
        if (index < 0) throw new ArgumentException($"No cache on layer {layer} (caches on {string.Join(", ", _caches.Select(c => c.Layer))}).", nameof(layer));
        Volatile.Write(ref _thresholds[index], threshold);
        Interlocked.Increment(ref _thresholdVersion);
    }

    private int _thresholdVersion;

    /// <summary>Changes with every <see cref="SetThreshold"/>: shadow rows served under older thresholds say nothing about the new ones.</summary>
    internal int ThresholdVersion => Volatile.Read(ref _thresholdVersion);

    /// <summary>Runs <paramref name="count"/> images (row-major, C*H*W each, already validated).</summary>
    public EarlyExitBatch Run(float[] images, int count)
    {
        Enter();
        try
        {
            var classes = ClassCount;
            var result = new EarlyExitBatch(count, classes);
            var clock = Stopwatch.StartNew();
            var tap = Shadow;
            var sampled = tap?.Choose(count);
            var version = ThresholdVersion;
            Span<float> thresholds = stackalloc float[_caches.Length];
            for (var i = 0; i < thresholds.Length; i++) thresholds[i] = Volatile.Read(ref _thresholds[i]);
            // One input: one call through the single graph where the backend has it, shadowed or not. A row the tap
            // keeps costs the caller a copy of its input; the tap's worker computes its activations later, off the
            // request's path (the single graph keeps them to itself).
            var size = InputShape.Size;
            if (count == 1 && _backend.TryRunOne(images.AsSpan(0, size), thresholds, result.Probabilities.AsSpan(0, classes), out var exit))
            {
                Label(result, 0, exit == _caches.Length ? 0 : _caches[exit].Layer);
                result.ElapsedMs = clock.Elapsed.TotalMilliseconds;
                var fullRun = exit == _caches.Length;
                if (tap is not null && (sampled?[0] == true || (fullRun && tap.CaptureFullRuns)))
                {
                    tap.Captured([new Online.ShadowRow(Interlocked.Increment(ref _sequence), result.ExitLayer[0], result.PredictedClass[0], sampled?[0] == true, _caches.Length)
                    {
                        Engine = this,
                        ThresholdVersion = version,
                        Input = images.AsSpan(0, size).ToArray(),
                        BaseProbabilities = fullRun ? result.Probabilities.AsSpan(0, classes).ToArray() : null,
                    }]);
                }
                return result;
            }
            var shadow = tap is null ? null : new ShadowCall(this, tap, count, sampled);
            using (var call = _backend.Begin(0, images, count, thresholds))
            {
                // Positions (in this call) of the rows still in the batch.
                var alive = new int[count];
                for (var i = 0; i < count; i++) alive[i] = i;
                var aliveCount = count;
                var keep = new int[count];
                for (var segment = 0; segment <= _caches.Length && aliveCount > 0; segment++)
                {
                    var output = call.Run(segment);
                    if (segment == _caches.Length)
                    {
                        for (var i = 0; i < aliveCount; i++) Record(result, output.Probabilities.Slice(i * classes, classes), alive[i], 0);
                        shadow?.AtEnd(call, output, alive.AsSpan(0, aliveCount));
                        break;
                    }
                    shadow?.AfterCache(call, segment, output, alive.AsSpan(0, aliveCount));
                    var layer = _caches[segment].Layer;
                    var kept = 0;
                    for (var i = 0; i < aliveCount; i++)
                    {
                        if (output.Hits[i]) Record(result, output.Probabilities.Slice(i * classes, classes), alive[i], layer);
                        else keep[kept++] = i;
                    }
                    if (kept != aliveCount)
                    {
                        for (var j = 0; j < kept; j++) alive[j] = alive[keep[j]];
                        aliveCount = kept;
                        if (kept > 0) call.Keep(keep.AsSpan(0, kept));
                    }
                    shadow?.AfterCompaction(segment, alive.AsSpan(0, aliveCount));
                }
            }
            result.ElapsedMs = clock.Elapsed.TotalMilliseconds;
            shadow?.Deliver(result);
            return result;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>
    /// Runs rows that exited at cache <paramref name="exitSegment"/> through the rest of the network (no exits), from
    /// that layer's activations: their features at the later cache layers and the base model's probabilities; with
    /// <paramref name="exitSegment"/> = -1, from the input images through every cache layer. Used off the request
    /// path, for shadow rows.
    /// </summary>
    internal (float[][] Features, float[] HitProbabilities, int[] PredictedClasses, float[] BaseProbabilities) ContinueToEnd(int exitSegment, float[] activations, int count)
    {
        Enter();
        try
        {
            var classes = ClassCount;
            var later = _caches.Length - exitSegment - 1;
            var features = new float[later][];
            var hitProbabilities = new float[later * count];
            var predicted = new int[later * count];
            Span<float> never = stackalloc float[_caches.Length];
            never.Fill(float.PositiveInfinity);
            using var call = _backend.Begin(exitSegment + 1, activations, count, never);
            for (var segment = exitSegment + 1; ; segment++)
            {
                var output = call.Run(segment);
                if (segment == _caches.Length) return (features, hitProbabilities, predicted, output.Probabilities[..(count * classes)].ToArray());
                var k = segment - exitSegment - 1;
                var size = _caches[segment].InputSize;
                features[k] = call.Activation(segment)[..(count * size)].ToArray();
                output.HitProbabilities.CopyTo(hitProbabilities.AsSpan(k * count, count));
                for (var i = 0; i < count; i++) predicted[k * count + i] = Online.ShadowRow.ArgMax(output.Probabilities.Slice(i * classes, classes));
            }
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Collects, during one call, what the shadow tap asked for: a copy per captured row, nothing else.</summary>
    private sealed class ShadowCall(EarlyExitEngine engine, Online.IShadowTap tap, int count, bool[]? sampled)
    {
        private readonly bool[]? _sampled = sampled;
        private readonly int _version = engine.ThresholdVersion;
        private readonly float[][] _hitProbability = engine._caches.Select(_ => new float[count]).ToArray();
        private readonly int[][] _predicted = engine._caches.Select(_ => Enumerable.Repeat(-1, count).ToArray()).ToArray();
        private readonly float[]?[][] _features = engine._caches.Select(_ => new float[]?[count]).ToArray();
        private readonly int[][] _aliveAfter = new int[engine._caches.Length][];
        private float[]?[]? _base;

        private bool Sampled(int row) => _sampled is { } s && s[row];

        public void AfterCache(IEarlyExitCall call, int segment, SegmentResult output, ReadOnlySpan<int> alive)
        {
            output.HitProbabilities.CopyTo(_hitProbability[segment]);
            var size = engine._caches[segment].InputSize;
            var activation = call.Activation(segment);
            // Sampled rows: copy now, before compaction may overwrite the rows that exit here.
            for (var i = 0; i < alive.Length; i++)
                if (Sampled(alive[i])) _features[segment][alive[i]] = Online.ShadowRow.Keep(activation.Slice(i * size, size));
            // P(hit) and the predictor's class by row, not by position.
            var byPosition = _hitProbability[segment];
            var byRow = new float[count];
            Array.Fill(byRow, float.NaN);
            var classes = engine.ClassCount;
            for (var i = 0; i < alive.Length; i++)
            {
                byRow[alive[i]] = byPosition[i];
                // The backend hands out probabilities for every row here (TorchSharp only when some row exits).
                if (output.Probabilities.Length >= (i + 1) * classes)
                    _predicted[segment][alive[i]] = Online.ShadowRow.ArgMax(output.Probabilities.Slice(i * classes, classes));
            }
            _hitProbability[segment] = byRow;
        }

        public void AfterCompaction(int segment, ReadOnlySpan<int> alive)
        {
            if (tap.CaptureFullRuns) _aliveAfter[segment] = alive.ToArray();
        }

        public void AtEnd(IEarlyExitCall call, SegmentResult output, ReadOnlySpan<int> alive)
        {
            var classes = engine.ClassCount;
            _base = new float[]?[count];
            for (var i = 0; i < alive.Length; i++)
            {
                var row = alive[i];
                if (!tap.CaptureFullRuns && !Sampled(row)) continue;
                _base[row] = output.Probabilities.Slice(i * classes, classes).ToArray();
                if (Sampled(row)) continue; // its features were copied on the way
                // A row that ran everything is still in every cache's activation buffer, at its place after compaction.
                for (var s = 0; s < engine._caches.Length; s++)
                {
                    var size = engine._caches[s].InputSize;
                    var position = Array.BinarySearch(_aliveAfter[s], row);
                    _features[s][row] = Online.ShadowRow.Keep(call.Activation(s).Slice(position * size, size));
                }
            }
        }

        public void Deliver(EarlyExitBatch result)
        {
            var rows = new List<Online.ShadowRow>();
            for (var row = 0; row < count; row++)
            {
                var sampled = Sampled(row);
                var fullRun = result.ExitLayer[row] == 0;
                if (!sampled && !(fullRun && tap.CaptureFullRuns)) continue;
                var shadowRow = new Online.ShadowRow(Interlocked.Increment(ref engine._sequence), result.ExitLayer[row], result.PredictedClass[row], sampled, engine._caches.Length)
                {
                    Engine = engine,
                    ThresholdVersion = _version,
                };
                for (var s = 0; s < engine._caches.Length; s++)
                {
                    shadowRow.Features[s] = _features[s][row];
                    shadowRow.HitProbabilities[s] = _hitProbability[s][row];
                    shadowRow.PredictedClasses[s] = _predicted[s][row];
                }
                shadowRow.BaseProbabilities = _base?[row];
                rows.Add(shadowRow);
            }
            if (rows.Count > 0) tap.Captured(rows);
        }
    }

    private static void Record(EarlyExitBatch result, ReadOnlySpan<float> probabilities, int row, int layer)
    {
        probabilities.CopyTo(result.Probabilities.AsSpan(row * probabilities.Length, probabilities.Length));
        Label(result, row, layer);
    }

    /// <summary>The predicted class and exit layer of a row whose probabilities are in place.</summary>
    private static void Label(EarlyExitBatch result, int row, int layer)
    {
        var classes = result.Probabilities.Length / result.PredictedClass.Length;
        var probabilities = result.Probabilities.AsSpan(row * classes, classes);
        var best = 0;
        for (var c = 1; c < classes; c++) if (probabilities[c] > probabilities[best]) best = c;
        result.PredictedClass[row] = best;
        result.ExitLayer[row] = layer;
    }

    private void Enter()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _inFlight++;
        }
    }

    private void Exit()
    {
        lock (_gate)
        {
            if (--_inFlight == 0 && _disposed) Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Refuses new calls, waits for the calls in flight, then releases the networks.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            while (_inFlight > 0) Monitor.Wait(_gate);
        }
        _backend.Dispose();
        foreach (var cache in _caches) cache.Dispose();
        BaseModel.Release();
    }
}
