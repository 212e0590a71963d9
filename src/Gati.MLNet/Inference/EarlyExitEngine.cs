using System.Diagnostics;
using Gati.MLNet.Data;
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
    // Process-wide, not per engine: online updates compare the sequences of rows that different generations served
    // (a candidate validates on rows "since" the newest it trained on). Numbered per engine, a new generation's rows
    // started again from 1, and the next update's validation waited until they outnumbered the old generation's: on the
    // imported ResNet-18's drift stream, 3,300 requests where 750 bring its 150 fresh sampled rows.
    private static long s_rowSequence;
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
            var backend = ExecutionBackends.For(options.Backend).Create(held, ordered, options);
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

    /// <summary>
    /// A second engine over the same base model and caches for a background thread: its own segment sessions, which run
    /// every operator on the calling thread, so that the thread's low priority (BackgroundPriority) covers all of the work.
    /// On the serving engine's sessions, part of each call ran on their pool threads at serving's priority, and competed
    /// there with requests. Costs one more copy of the weights.
    /// </summary>
    internal EarlyExitEngine CreateBackgroundWorker() =>
        Create(BaseModel, _caches, EarlyExitEngineOptions.ForBackgroundWork(Backend, Device));

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
    /// Watches every call from inside (null: none); online caches shadow served requests through it. Needs a backend
    /// that exposes activations (ONNX Runtime on the CPU).
    /// </summary>
    internal IEarlyExitObserver? Observer
    {
        get => Volatile.Read(ref _observer);
        set
        {
            if (value is not null && !ExposesActivations)
                throw new NotSupportedException($"Shadowing served requests needs activations from the backend; {_backend.Description} keeps them to itself. Use the ONNX Runtime backend on the CPU.");
            Volatile.Write(ref _observer, value);
        }
    }

    private IEarlyExitObserver? _observer;

    /// <summary>
    /// Opens the single graph's tapped form ahead of the first call that keeps its activations (no request waits for the
    /// session), and answers every one-input call on it from then on; false where the backend has none (such calls run
    /// segment by segment).
    /// </summary>
    internal bool PrepareTapped() => _backend.PrepareTapped();

    /// <summary>Whether this backend can hand out the activations it computed (for observers).</summary>
    internal bool ExposesActivations => ExecutionBackends.For(Backend).ExposesActivations(Device);

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

    /// <summary>Changes with every <see cref="SetThreshold"/>: rows served under older thresholds say nothing about the new ones.</summary>
    internal int ThresholdVersion => Volatile.Read(ref _thresholdVersion);

    /// <summary>Numbers the rows observers keep, in order of arrival, across every engine of the process.</summary>
    internal static long NextRowSequence() => Interlocked.Increment(ref s_rowSequence);

    /// <summary>Runs <paramref name="count"/> images (row-major, C*H*W each, already validated).</summary>
    public EarlyExitBatch Run(float[] images, int count)
    {
        Enter();
        try
        {
            var classes = ClassCount;
            var result = new EarlyExitBatch(count, classes);
            var clock = Stopwatch.StartNew();
            // Asked before the thresholds are read: a threshold moved in between makes the rows look older, never newer.
            var observer = Observer?.Observe(this, count);
            Span<float> thresholds = stackalloc float[_caches.Length];
            for (var i = 0; i < thresholds.Length; i++) thresholds[i] = Volatile.Read(ref _thresholds[i]);
            // One input: one call through the single graph where the backend has it; through its tapped form when the
            // observer wants this call's activations (segment by segment where there is none). An observer that keeps a
            // row answered by the plain single graph copies its input and computes its activations later, off the request's path.
            var size = InputShape.Size;
            // A single graph's answer: exit index i is cache i, the number of caches the base model's head (layer 0).
            void Answered(int exit)
            {
                Label(result, 0, exit == _caches.Length ? 0 : _caches[exit].Layer);
                result.ElapsedMs = clock.Elapsed.TotalMilliseconds;
            }
            if (count == 1 && observer is { WantsActivations: true })
            {
                using var taps = _backend.TryRunOneTapped(images.AsSpan(0, size), thresholds, result.Probabilities.AsSpan(0, classes), out var tappedExit);
                if (taps is not null)
                {
                    Answered(tappedExit);
                    observer.AnsweredTapped(taps, result);
                    return result;
                }
            }
            else if (count == 1 && _backend.TryRunOne(images.AsSpan(0, size), thresholds, result.Probabilities.AsSpan(0, classes), out var exit))
            {
                Answered(exit);
                observer?.AnsweredWhole(images.AsSpan(0, size), result);
                return result;
            }
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
                        observer?.AtEnd(call, output, alive.AsSpan(0, aliveCount));
                        break;
                    }
                    observer?.AfterCache(call, segment, output, alive.AsSpan(0, aliveCount));
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
                    observer?.AfterCompaction(segment, alive.AsSpan(0, aliveCount));
                }
            }
            result.ElapsedMs = clock.Elapsed.TotalMilliseconds;
            observer?.Answered(result);
            return result;
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>
    /// What a whole-network request at batch 1 costs on the single graph and on its tapped form with every cache layer's
    /// activations copied out (what an observer that keeps the row pays), ms (<see cref="ThreadingChoice.Fast"/> of
    /// <paramref name="runs"/> alternating calls) on a fixed random image with every cache off; null where the backend
    /// has no single graph. Meant for before <see cref="PrepareTapped"/>, after which both answer on the tapped form.
    /// </summary>
    internal (double SingleGraphMs, double CopyingMs)? TimeWholeRuns(int runs)
    {
        Enter();
        try
        {
            var size = InputShape.Size;
            var image = new float[size];
            var random = new Random(5);
            for (var i = 0; i < size; i++) image[i] = (float)random.NextDouble();
            Span<float> never = stackalloc float[_caches.Length];
            never.Fill(float.PositiveInfinity);
            var probabilities = new float[ClassCount];
            var copies = _caches.Select(c => new float[c.InputSize]).ToArray();
            bool Single(ReadOnlySpan<float> thresholds) => _backend.TryRunOne(image, thresholds, probabilities, out _);
            void Tapped(ReadOnlySpan<float> thresholds)
            {
                using var taps = _backend.TryRunOneTapped(image, thresholds, probabilities, out _)
                    ?? throw new InvalidOperationException("The backend has a single graph but no tapped form of it.");
                for (var cache = 0; cache < _caches.Length; cache++) taps.Activation(cache).CopyTo(copies[cache]);
            }
            if (!Single(never)) return null;
            Tapped(never);
            var single = new double[runs];
            var tapped = new double[runs];
            for (var i = 0; i < runs; i++)
            {
                var start = Stopwatch.GetTimestamp();
                Single(never);
                single[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                start = Stopwatch.GetTimestamp();
                Tapped(never);
                tapped[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            return (ThreadingChoice.Fast(single), ThreadingChoice.Fast(tapped));
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
    /// path, for observed rows.
    /// </summary>
    /// <param name="exitSegment">The cache the rows exited at (-1: the rows are input images).</param>
    /// <param name="activations">That layer's activations (or the images), row after row.</param>
    /// <param name="count">Rows.</param>
    /// <param name="beforeSegment">Called before each segment runs (a background caller steps aside for requests there).</param>
    internal (float[][] Features, float[] HitProbabilities, int[] PredictedClasses, float[] BaseProbabilities) ContinueToEnd(int exitSegment, float[] activations, int count,
        Action? beforeSegment = null)
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
                beforeSegment?.Invoke();
                var output = call.Run(segment);
                if (segment == _caches.Length) return (features, hitProbabilities, predicted, output.Probabilities[..(count * classes)].ToArray());
                var k = segment - exitSegment - 1;
                var size = _caches[segment].InputSize;
                features[k] = call.Activation(segment)[..(count * size)].ToArray();
                output.HitProbabilities.CopyTo(hitProbabilities.AsSpan(k * count, count));
                for (var i = 0; i < count; i++) predicted[k * count + i] = ArgMax(output.Probabilities.Slice(i * classes, classes));
            }
        }
        finally
        {
            Exit();
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
        result.PredictedClass[row] = ArgMax(result.Probabilities.AsSpan(row * classes, classes));
        result.ExitLayer[row] = layer;
    }

    /// <summary>The first index of the largest value (ties go to the lower class, as everywhere in Gati).</summary>
    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>
    /// Waits until no call is running (no request in flight, on a serving engine), at most <paramref name="most"/>:
    /// how background work on the same cores steps aside for requests. True when it was idle in time.
    /// </summary>
    internal bool WaitUntilIdle(TimeSpan most)
    {
        lock (_gate)
        {
            if (_inFlight == 0) return true;
            var deadline = Stopwatch.GetTimestamp() + (long)(most.TotalSeconds * Stopwatch.Frequency);
            while (_inFlight > 0)
            {
                var left = deadline - Stopwatch.GetTimestamp();
                if (left <= 0) return false;
                Monitor.Wait(_gate, TimeSpan.FromSeconds((double)left / Stopwatch.Frequency));
            }
            return true;
        }
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
            // Wakes Dispose, and background work waiting for the engine to be idle (WaitUntilIdle).
            if (--_inFlight == 0) Monitor.PulseAll(_gate);
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
