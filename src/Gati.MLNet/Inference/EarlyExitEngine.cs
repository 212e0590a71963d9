using System.Diagnostics;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Transforms;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Inference;

/// <summary>Raw results of one engine call: per row, the class, its probabilities and the exit layer.</summary>
internal sealed class EarlyExitBatch
{
    public EarlyExitBatch(int rows, int classes)
    {
        PredictedClass = new int[rows];
        Probabilities = new float[rows * classes];
        ExitLayer = new int[rows];
    }

    /// <summary>0-based predicted class per row.</summary>
    public int[] PredictedClass { get; }

    /// <summary>Probabilities, rows x classes.</summary>
    public float[] Probabilities { get; }

    /// <summary>Exit layer per row (0 = full model).</summary>
    public int[] ExitLayer { get; }

    public double ElapsedMs { get; set; }
}

/// <summary>
/// Runs a base ResNet block by block with learned caches: after each cached block, the cache's predictor and
/// selector run on the rows still in the batch; rows whose selector says "hit" leave the batch with the
/// predictor's answer (the batch is compacted), the rest continue; rows that reach the end get the base model's
/// answer. A real early exit: skipped blocks are never computed. Calls are serialised on the base network's lock,
/// so one engine is safe to share between threads; every call runs in its own DisposeScope.
/// </summary>
internal sealed class EarlyExitEngine : IDisposable
{
    private readonly SharedModule<ResNet> _base;
    private readonly LearnedCache?[] _cacheAtLayer;
    private int _disposed;

    public EarlyExitEngine(SharedModule<ResNet> baseNetwork, IReadOnlyList<LearnedCache> caches, IReadOnlyList<string> classNames,
        Data.ChannelNormalization? inputNormalization = null)
    {
        InputNormalization = inputNormalization;
        _base = baseNetwork.Acquire();
        var network = _base.Module;
        _cacheAtLayer = new LearnedCache?[network.LayerCount + 1];
        try
        {
            foreach (var cache in caches)
            {
                network.Spec.CheckLayer(cache.Layer);
                if (_cacheAtLayer[cache.Layer] is not null)
                    throw new ArgumentException($"Two caches on layer {cache.Layer}: choose one per layer first (CacheOptimizer / gati optimize).", nameof(caches));
                var expected = network.LayerOutputShape(cache.Layer).Size;
                if (cache.Predictor.Module.InputSize != expected)
                    throw new ArgumentException($"The layer-{cache.Layer} predictor reads {cache.Predictor.Module.InputSize} values but the base model's layer {cache.Layer} has {expected}.", nameof(caches));
                if (cache.Predictor.Module.Classes != network.Config.ClassCount)
                    throw new ArgumentException($"The layer-{cache.Layer} predictor has {cache.Predictor.Module.Classes} classes, the base model {network.Config.ClassCount}.", nameof(caches));
                _cacheAtLayer[cache.Layer] = cache.Share();
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        ClassNames = classNames.ToArray();
        Caches = _cacheAtLayer.OfType<LearnedCache>().ToArray();
    }

    public ResNetConfig Config => _base.Module.Config;

    public Data.ChannelNormalization? InputNormalization { get; }

    public IReadOnlyList<string> ClassNames { get; }

    public IReadOnlyList<LearnedCache> Caches { get; }

    public Device Device => _base.Device;

    /// <summary>Runs <paramref name="count"/> images (row-major, C*H*W each, already validated).</summary>
    public EarlyExitBatch Run(float[] images, int count)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var shape = Config.InputShape;
        var classes = Config.ClassCount;
        var result = new EarlyExitBatch(count, classes);
        var clock = Stopwatch.StartNew();
        lock (_base.Gate)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var network = _base.Module;
            var h = tensor(images, shape.WithBatch(images.Length / shape.Size)).narrow(0, 0, count).to(_base.Device);
            h = network.Stem(h);
            // Row numbers (in this call) of the rows still in the batch.
            var alive = Enumerable.Range(0, count).ToArray();
            for (var layer = 1; layer <= network.LayerCount && alive.Length > 0; layer++)
            {
                h = Step(() => network.Block(layer, h), h);
                if (_cacheAtLayer[layer] is not { } cache) continue;
                var (logp, hit) = cache.Lookup(h.flatten(1));
                if (alive.Length == 1)
                {
                    // Batch of one: one host sync, no index arithmetic.
                    if (!hit.item<bool>()) continue;
                    Record(result, logp.exp(), alive, layer, classes);
                    alive = [];
                    break;
                }
                var flags = hit.cpu().data<bool>().ToArray();
                var exits = 0;
                foreach (var f in flags) if (f) exits++;
                if (exits == 0) continue;
                var hitRows = new long[exits];
                var keepRows = new long[alive.Length - exits];
                for (int i = 0, a = 0, b = 0; i < flags.Length; i++)
                {
                    if (flags[i]) hitRows[a++] = i;
                    else keepRows[b++] = i;
                }
                var hitIndex = tensor(hitRows).to(_base.Device);
                Record(result, logp.index_select(0, hitIndex).exp(), hitRows.Select(i => alive[i]).ToArray(), layer, classes);
                if (keepRows.Length == 0)
                {
                    alive = [];
                    break;
                }
                var keepIndex = tensor(keepRows).to(_base.Device);
                h = Step(() => h.index_select(0, keepIndex), h);
                alive = keepRows.Select(i => alive[i]).ToArray();
            }
            if (alive.Length > 0)
                Record(result, nn.functional.softmax(network.Head(h), 1), alive, 0, classes);
        }
        result.ElapsedMs = clock.Elapsed.TotalMilliseconds;
        return result;
    }

    /// <summary>Computes the next activation in its own scope and frees the previous one, so memory stays at about one layer.</summary>
    private static Tensor Step(Func<Tensor> next, Tensor previous)
    {
        Tensor result;
        using (var inner = NewDisposeScope())
        {
            result = next().MoveToOuterDisposeScope();
        }
        previous.Dispose();
        return result;
    }

    private static void Record(EarlyExitBatch result, Tensor probabilities, int[] rows, int layer, int classes)
    {
        var values = probabilities.cpu().data<float>().ToArray();
        for (var i = 0; i < rows.Length; i++)
        {
            var row = rows[i];
            var span = values.AsSpan(i * classes, classes);
            span.CopyTo(result.Probabilities.AsSpan(row * classes, classes));
            var best = 0;
            for (var c = 1; c < classes; c++) if (span[c] > span[best]) best = c;
            result.PredictedClass[row] = best;
            result.ExitLayer[row] = layer;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var cache in _cacheAtLayer) cache?.Dispose();
        _base.Release();
    }
}
