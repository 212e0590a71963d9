using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// Runs the segments with the trained TorchSharp networks on their device. Calls are serialised on the base
/// network's lock (libtorch modules are not safe for concurrent forward passes) from <see cref="Begin"/> to the call's
/// Dispose; each call runs in its own DisposeScope, and each activation is freed as soon as the next one exists.
/// </summary>
internal sealed class TorchSharpBackend : IEarlyExitBackend
{
    private readonly SharedModule<ResNet> _base;
    private readonly LearnedCache[] _caches;
    private int _disposed;

    public TorchSharpBackend(ResNetBaseModel baseModel, IReadOnlyList<LearnedCache> caches)
    {
        _base = baseModel.Network.Acquire();
        _caches = caches.OrderBy(c => c.Layer).Select(c => c.Share()).ToArray();
    }

    public string Description => $"TorchSharp ({_base.Device})";

    public string Device => _base.Device.ToString();

    /// <summary>TorchSharp runs segment by segment (its dispatch cost is per operation, not per call).</summary>
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

    public IEarlyExitCall Begin(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds) => new Call(this, segment, inputs, count, thresholds);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var cache in _caches) cache.Dispose();
        _base.Release();
    }

    private sealed class Call : IEarlyExitCall
    {
        private readonly TorchSharpBackend _owner;
        private readonly SharedModule<ResNet>.Lease _lease;
        private readonly DisposeScope _scope;
        private readonly IDisposable _noGrad;
        private readonly int _classes;
        private Tensor _activation;
        private readonly float[] _thresholds;
        private float[] _probabilities = [];
        private float[] _hitProbabilities = [];
        private bool[] _hits = [];

        public Call(TorchSharpBackend owner, int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds)
        {
            _owner = owner;
            _thresholds = thresholds.ToArray();
            _lease = owner._base.Use();
            owner._base.Module.eval();
            foreach (var cache in owner._caches)
            {
                cache.Predictor.Module.eval();
                cache.Selector.Module.eval();
            }
            _scope = NewDisposeScope();
            _noGrad = no_grad();
            try
            {
                var network = owner._base.Module;
                _classes = network.Config.ClassCount;
                var shape = segment == 0 ? network.Config.InputShape : network.LayerOutputShape(owner._caches[segment - 1].Layer);
                _activation = tensor(inputs, shape.WithBatch(inputs.Length / shape.Size)).narrow(0, 0, count).to(owner._base.Device);
            }
            catch
            {
                // The engine disposes only calls that began: leave nothing locked behind.
                Dispose();
                throw;
            }
        }

        public SegmentResult Run(int segment)
        {
            var network = _owner._base.Module;
            var first = segment == 0 ? 0 : _owner._caches[segment - 1].Layer + 1;
            if (first == 0)
            {
                _activation = Step(network.Stem, _activation);
                first = 1;
            }
            if (segment == _owner._caches.Length)
            {
                for (var layer = first; layer <= network.LayerCount; layer++)
                    _activation = Step(x => network.Block(layer, x), _activation);
                var probabilities = nn.functional.softmax(network.Head(_activation), 1);
                return new SegmentResult(ToHost(probabilities), []);
            }

            var cache = _owner._caches[segment];
            for (var layer = first; layer <= cache.Layer; layer++)
                _activation = Step(x => network.Block(layer, x), _activation);
            Tensor logProbabilities, hitProbability, hit;
            using (var lookup = NewDisposeScope())
            {
                // The flattened view would keep this layer's activation alive until the call ends: only the small
                // results leave the scope, so memory stays at about one activation however many caches run.
                var (l, p, h) = cache.Lookup(_activation.flatten(1), _thresholds[segment]);
                logProbabilities = l.MoveToOuterDisposeScope();
                hitProbability = p.MoveToOuterDisposeScope();
                hit = h.MoveToOuterDisposeScope();
            }
            var rows = (int)hit.shape[0];
            if (_hits.Length < rows)
            {
                _hits = new bool[rows];
                _hitProbabilities = new float[rows];
            }
            // One host copy of the hit flags (and P(hit)); probabilities only when some row leaves here.
            hit.cpu().data<bool>().CopyTo(_hits, 0, 0);
            hitProbability.cpu().data<float>().CopyTo(_hitProbabilities, 0, 0);
            var anyHit = _hits.AsSpan(0, rows).Contains(true);
            return new SegmentResult(anyHit ? ToHost(logProbabilities.exp()) : [], _hits.AsSpan(0, rows), _hitProbabilities.AsSpan(0, rows));
        }

        public ReadOnlySpan<float> Activation(int segment) => [];

        public void Keep(ReadOnlySpan<int> rows)
        {
            var index = tensor(rows.ToArray().Select(r => (long)r).ToArray()).to(_owner._base.Device);
            _activation = Step(x => x.index_select(0, index), _activation);
        }

        private ReadOnlySpan<float> ToHost(Tensor probabilities)
        {
            var length = (int)probabilities.numel();
            if (_probabilities.Length < length) _probabilities = new float[length];
            probabilities.cpu().data<float>().CopyTo(_probabilities, 0, 0);
            return _probabilities.AsSpan(0, length);
        }

        /// <summary>Computes the next activation in its own scope and frees the previous one: memory stays at about one layer.</summary>
        private static Tensor Step(Func<Tensor, Tensor> next, Tensor previous)
        {
            Tensor result;
            using (var inner = NewDisposeScope())
            {
                result = next(previous).MoveToOuterDisposeScope();
            }
            previous.Dispose();
            return result;
        }

        public void Dispose()
        {
            _noGrad.Dispose();
            _scope.Dispose();
            _lease.Dispose();
        }
    }
}
