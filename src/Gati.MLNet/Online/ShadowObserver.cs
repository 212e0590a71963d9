using Gati.MLNet.Inference;
using Gati.MLNet.Inference.Backends;

namespace Gati.MLNet.Online;

/// <summary>
/// Shadows an engine's calls for an <see cref="IShadowTap"/>: during each call, copies what the tap asked for (the rows
/// it sampled, and every row that ran the whole network when it keeps those) and hands the rows over after the answer.
/// </summary>
internal sealed class ShadowObserver(IShadowTap tap) : IEarlyExitObserver
{
    /// <summary>The tap served.</summary>
    public IShadowTap Tap => tap;

    public IEarlyExitCallObserver? Observe(EarlyExitEngine engine, int count)
    {
        var sampled = tap.Choose(count);
        var keepFullRuns = tap.CaptureFullRuns ? tap.KeepFullRuns(count) ?? Enumerable.Repeat(true, count).ToArray() : null;
        var drawn = 0;
        for (var i = 0; i < count; i++)
            if (sampled?[i] == true || keepFullRuns?[i] == true) drawn++;
        // A call that keeps no row costs nothing more than the draws.
        if (drawn == 0)
        {
            if (keepFullRuns is not null) return new LeavingOut(tap);
            return null;
        }
        tap.Drawn(drawn);
        return new ShadowCall(engine, tap, count, sampled, keepFullRuns);
    }

    /// <summary>A call none of whose rows is kept: only counts its full runs as left out.</summary>
    private sealed class LeavingOut(IShadowTap tap) : IEarlyExitCallObserver
    {
        public bool WantsActivations => false;

        public void AnsweredWhole(ReadOnlySpan<float> input, EarlyExitBatch result)
        {
            if (result.ExitLayer[0] == 0) tap.LeftOut(1);
        }

        public void AnsweredTapped(SingleGraphTaps taps, EarlyExitBatch result) => AnsweredWhole([], result);

        public void AfterCache(IEarlyExitCall call, int segment, SegmentResult output, ReadOnlySpan<int> alive)
        {
        }

        public void AfterCompaction(int segment, ReadOnlySpan<int> alive)
        {
        }

        public void AtEnd(IEarlyExitCall call, SegmentResult output, ReadOnlySpan<int> alive) => tap.LeftOut(alive.Length);

        public void Answered(EarlyExitBatch result)
        {
        }
    }

    /// <summary>Collects, during one call, what the tap asked for: a copy per captured row, nothing else.</summary>
    private sealed class ShadowCall(EarlyExitEngine engine, IShadowTap tap, int count, bool[]? sampled, bool[]? keepFullRuns) : IEarlyExitCallObserver
    {
        private readonly int _version = engine.ThresholdVersion;
        private readonly int _caches = engine.Caches.Count;
        private float[][]? _hitProbability;
        private int[][]? _predicted;
        private float[]?[][]? _features;
        private int[][]? _aliveAfter;
        private float[]?[]? _base;

        private bool Sampled(int row) => sampled is { } s && s[row];

        // Kept should it run the whole network (drawn before the call).
        private bool KeepsFullRun(int row) => keepFullRuns is { } k && k[row];

        // The row handed over for one position of this call, as served; its features come after.
        private ShadowRow NewRow(EarlyExitBatch result, int row) =>
            new(EarlyExitEngine.NextRowSequence(), result.ExitLayer[row], result.PredictedClass[row], Sampled(row), _caches)
            {
                Engine = engine,
                ThresholdVersion = _version,
            };

        // A call of one input that ran the whole network: its answer is the base model's, the label of a full run.
        private float[]? BaseAnswerOfOne(EarlyExitBatch result) =>
            result.ExitLayer[0] == 0 ? result.Probabilities.AsSpan(0, engine.ClassCount).ToArray() : null;

        // Whether a row is handed over, once it is known whether it ran the whole network; counts a full run left out.
        private bool Kept(int row, bool fullRun)
        {
            if (Sampled(row)) return true;
            if (!fullRun || keepFullRuns is null) return false;
            if (KeepsFullRun(row)) return true;
            tap.LeftOut(1);
            return false;
        }

        // One input whose row is kept whatever it does runs on the tapped single graph when the tap copies activations; one
        // that is kept only if it runs the whole network does too (which it does about as often as the caches miss).
        public bool WantsActivations => count == 1 && tap.CopyActivations && (Sampled(0) || KeepsFullRun(0));

        public void AnsweredWhole(ReadOnlySpan<float> input, EarlyExitBatch result)
        {
            var fullRun = result.ExitLayer[0] == 0;
            if (!Kept(0, fullRun)) return;
            // The tap's worker computes the activations later, off the request's path (the single graph keeps them to itself).
            var row = NewRow(result, 0);
            row.Input = input.ToArray();
            row.BaseProbabilities = BaseAnswerOfOne(result);
            tap.Captured([row]);
        }

        public void AnsweredTapped(SingleGraphTaps taps, EarlyExitBatch result)
        {
            var exitLayer = result.ExitLayer[0];
            var fullRun = exitLayer == 0;
            if (!Kept(0, fullRun)) return;
            var row = NewRow(result, 0);
            row.BaseProbabilities = BaseAnswerOfOne(result);
            // As on segment calls: every layer the request passed keeps what the window keeps of it; a sampled row keeps
            // its exit layer's activations whole, for the worker to run the rest of the network from.
            for (var s = 0; s < _caches; s++)
            {
                if (!taps.Reached(s)) continue;
                var cache = engine.Caches[s];
                var activation = taps.Activation(s);
                row.Features[s] = row.Sampled && cache.Layer == exitLayer ? ShadowRow.Keep(activation) : cache.ReduceRow(activation);
                row.HitProbabilities[s] = taps.HitProbability(s);
                row.PredictedClasses[s] = EarlyExitEngine.ArgMax(taps.LogProbabilities(s));
            }
            tap.Captured([row]);
        }

        public void AfterCache(IEarlyExitCall call, int segment, SegmentResult output, ReadOnlySpan<int> alive)
        {
            // Allocated on the first segment, not for calls that the single graph answers.
            // NaN for the caches a row never reaches (the segments after its exit do not run for it).
            _hitProbability ??= Enumerable.Range(0, _caches).Select(_ => Enumerable.Repeat(float.NaN, count).ToArray()).ToArray();
            _predicted ??= Enumerable.Range(0, _caches).Select(_ => Enumerable.Repeat(-1, count).ToArray()).ToArray();
            _features ??= Enumerable.Range(0, _caches).Select(_ => new float[]?[count]).ToArray();
            _aliveAfter ??= new int[_caches][];
            output.HitProbabilities.CopyTo(_hitProbability[segment]);
            var cache = engine.Caches[segment];
            var size = cache.InputSize;
            var activation = call.Activation(segment);
            // Sampled rows: copy now, before compaction may overwrite the rows that exit here. A row that exits here keeps
            // its activations whole (the worker runs the rest of the network from them); a row that goes on keeps only
            // what the window keeps of them (the cache's reduction: a few thousand values instead of a hundred thousand,
            // which spares the collector most of what a kept request would allocate).
            for (var i = 0; i < alive.Length; i++)
            {
                if (!Sampled(alive[i])) continue;
                var row = activation.Slice(i * size, size);
                _features[segment][alive[i]] = output.Hits[i] ? ShadowRow.Keep(row) : cache.ReduceRow(row);
            }
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
                    _predicted[segment][alive[i]] = EarlyExitEngine.ArgMax(output.Probabilities.Slice(i * classes, classes));
            }
            _hitProbability[segment] = byRow;
        }

        public void AfterCompaction(int segment, ReadOnlySpan<int> alive)
        {
            if (keepFullRuns is not null) _aliveAfter![segment] = alive.ToArray();
        }

        public void AtEnd(IEarlyExitCall call, SegmentResult output, ReadOnlySpan<int> alive)
        {
            var classes = engine.ClassCount;
            _base = new float[]?[count];
            for (var i = 0; i < alive.Length; i++)
            {
                var row = alive[i];
                if (!Kept(row, fullRun: true)) continue;
                _base[row] = output.Probabilities.Slice(i * classes, classes).ToArray();
                if (Sampled(row)) continue; // its features were copied on the way
                // A row that ran everything is still in every cache's activation buffer, at its place after compaction.
                for (var s = 0; s < _caches; s++)
                {
                    var cache = engine.Caches[s];
                    var size = cache.InputSize;
                    var position = Array.BinarySearch(_aliveAfter![s], row);
                    var features = call.Activation(s).Slice(position * size, size);
                    _features![s][row] = cache.ReduceRow(features);
                }
            }
        }

        public void Answered(EarlyExitBatch result)
        {
            var rows = new List<ShadowRow>();
            for (var row = 0; row < count; row++)
            {
                var sampledRow = Sampled(row);
                // Full runs were kept or left out (and counted) at the end.
                if (!sampledRow && _base?[row] is null) continue;
                var shadowRow = NewRow(result, row);
                for (var s = 0; s < _caches; s++)
                {
                    shadowRow.Features[s] = _features?[s][row];
                    shadowRow.HitProbabilities[s] = _hitProbability?[s][row] ?? float.NaN;
                    shadowRow.PredictedClasses[s] = _predicted?[s][row] ?? -1;
                }
                shadowRow.BaseProbabilities = _base?[row];
                rows.Add(shadowRow);
            }
            if (rows.Count > 0) tap.Captured(rows);
        }
    }
}
