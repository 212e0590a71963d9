using System.Diagnostics;
using Gati.MLNet.Inference.Backends;
using Gati.MLNet.ModelFormat;
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
    private readonly object _gate = new();
    private int _inFlight;
    private bool _disposed;

    internal EarlyExitEngine(ResNetConfig config, IEarlyExitBackend backend, LearnedCache[] caches, IReadOnlyList<string> classNames,
        Data.ChannelNormalization? inputNormalization, ExecutionBackend kind)
    {
        Config = config;
        _backend = backend;
        _caches = caches;
        ClassNames = classNames.ToArray();
        InputNormalization = inputNormalization;
        Backend = kind;
    }

    /// <summary>Checks the caches against the base network and builds the engine on the chosen backend.</summary>
    /// <param name="baseNetwork">The base model.</param>
    /// <param name="caches">At most one cache per layer.</param>
    /// <param name="classNames">Class names in label order.</param>
    /// <param name="inputNormalization">The training images' normalisation, when known.</param>
    /// <param name="options">Backend and device.</param>
    /// <param name="onnxSegments">For ONNX Runtime: the segment graphs of exactly these caches (as stored in a model zip); exported when null.</param>
    public static EarlyExitEngine Create(SharedModule<ResNet> baseNetwork, IReadOnlyList<LearnedCache> caches, IReadOnlyList<string> classNames,
        Data.ChannelNormalization? inputNormalization, EarlyExitEngineOptions options, IReadOnlyList<Onnx.OnnxSegment>? onnxSegments = null)
    {
        var network = baseNetwork.Module;
        var seen = new HashSet<int>();
        foreach (var cache in caches)
        {
            network.Spec.CheckLayer(cache.Layer);
            if (!seen.Add(cache.Layer))
                throw new ArgumentException($"Two caches on layer {cache.Layer}: choose one per layer first (CacheOptimizer / gati optimize).", nameof(caches));
            var expected = network.LayerOutputShape(cache.Layer).Size;
            if (cache.Predictor.Module.InputSize != expected)
                throw new ArgumentException($"The layer-{cache.Layer} predictor reads {cache.Predictor.Module.InputSize} values but the base model's layer {cache.Layer} has {expected}.", nameof(caches));
            if (cache.Predictor.Module.Classes != network.Config.ClassCount)
                throw new ArgumentException($"The layer-{cache.Layer} predictor has {cache.Predictor.Module.Classes} classes, the base model {network.Config.ClassCount}.", nameof(caches));
        }
        var ordered = caches.OrderBy(c => c.Layer).ToArray();
        IEarlyExitBackend backend = options.Backend switch
        {
            ExecutionBackend.TorchSharp => new TorchSharpBackend(baseNetwork, ordered),
            _ => OnnxRuntimeBackend.Create(baseNetwork, ordered, options, onnxSegments),
        };
        var shares = ordered.Select(c => c.Share()).ToArray();
        return new EarlyExitEngine(network.Config, backend, shares, classNames, inputNormalization, options.Backend);
    }

    public ResNetConfig Config { get; }

    public Data.ChannelNormalization? InputNormalization { get; }

    public IReadOnlyList<string> ClassNames { get; }

    public IReadOnlyList<LearnedCache> Caches => _caches;

    public ExecutionBackend Backend { get; }

    public string BackendDescription => _backend.Description;

    public string Device => _backend.Device;

    /// <summary>Runs <paramref name="count"/> images (row-major, C*H*W each, already validated).</summary>
    public EarlyExitBatch Run(float[] images, int count)
    {
        Enter();
        try
        {
            var classes = Config.ClassCount;
            var result = new EarlyExitBatch(count, classes);
            var clock = Stopwatch.StartNew();
            using (var call = _backend.Begin(images, count))
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
                        break;
                    }
                    var layer = _caches[segment].Layer;
                    var kept = 0;
                    for (var i = 0; i < aliveCount; i++)
                    {
                        if (output.Hits[i]) Record(result, output.Probabilities.Slice(i * classes, classes), alive[i], layer);
                        else keep[kept++] = i;
                    }
                    if (kept == aliveCount) continue;
                    for (var j = 0; j < kept; j++) alive[j] = alive[keep[j]];
                    aliveCount = kept;
                    if (kept > 0) call.Keep(keep.AsSpan(0, kept));
                }
            }
            result.ElapsedMs = clock.Elapsed.TotalMilliseconds;
            return result;
        }
        finally
        {
            Exit();
        }
    }

    private static void Record(EarlyExitBatch result, ReadOnlySpan<float> probabilities, int row, int layer)
    {
        var classes = probabilities.Length;
        probabilities.CopyTo(result.Probabilities.AsSpan(row * classes, classes));
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
    }
}
