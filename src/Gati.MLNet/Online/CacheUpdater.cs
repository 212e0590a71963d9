using System.Buffers;
using System.Diagnostics;
using Gati.MLNet.Inference;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Policy;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Torch;
using Gati.MLNet.Training;
using static TorchSharp.torch;

namespace Gati.MLNet.Online;

/// <summary>A candidate set of caches from one update, with what it was trained and calibrated on.</summary>
internal sealed record UpdateCandidate(LearnedCache[] Caches, int TrainRows, int CalibrationRows, long TrainedThrough, string Summary);

/// <summary>How a set of caches would have served some rows: agreement and expected cost.</summary>
/// <param name="Rows">Rows served.</param>
/// <param name="Agreed">Of those, answers equal to the base model's.</param>
/// <param name="Lower">Lower confidence bound of agreement.</param>
/// <param name="Upper">Upper confidence bound of agreement.</param>
/// <param name="ExpectedMs">Mean cost per row from the per-segment timings.</param>
/// <param name="ExitShare">Share of rows per exit (caches in order, then the whole network).</param>
/// <param name="Outcomes">Per row: the cache it exits at (-1: the whole network) and whether its answer agrees.</param>
internal sealed record SimulatedServing(int Rows, int Agreed, double Lower, double Upper, double ExpectedMs, double[] ExitShare, (int Exit, bool Agreed)[] Outcomes)
{
    public double Agreement => Rows == 0 ? double.NaN : (double)Agreed / Rows;
}

/// <summary>
/// One online update of learned caches (docs/online.md): each cache's predictor and selector fine-tuned from their
/// current weights on the older half of the window (distillation from the base model's answers, as offline), the
/// thresholds calibrated together on the newer half (which the update did not train on) so that the agreement target
/// holds with the stated confidence, and the simulation that compares a candidate with the serving caches on fresh rows.
/// </summary>
internal static class CacheUpdater
{
    /// <summary>Labelled rows an update needs in the window: half to fine-tune on, half to calibrate on.</summary>
    public const int MinimumRows = 200;

    public static UpdateCandidate? Train(IReadOnlyList<LearnedCache> current, IReadOnlyList<ShadowRow> window, OnlineCacheOptions options, IReadOnlyList<double> segmentMs,
        CpuThrottle throttle, CancellationToken cancellation)
    {
        var rows = window.Where(Complete).OrderBy(r => r.Sequence).TakeLast(options.UpdateRows).ToArray();
        if (rows.Length < MinimumRows) return null;
        var split = rows.Length / 2;
        var train = rows[..split];
        var calibration = rows[split..];
        var predictors = new List<PredictorNetwork>();
        var selectors = new List<SelectorNetwork>();
        try
        {
            var outputs = new List<(float[] Probability, bool[] Correct)>();
            for (var i = 0; i < current.Count; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                var cache = current[i];
                // Window rows hold the reduced features (ShadowSampler.KeepReduced): the update trains the same weights
                // read as a network on those, and puts them back on the full features when done.
                var predictor = ReducedCopy(cache);
                predictors.Add(predictor);
                var selector = Clone(cache.Selector, () => new SelectorNetwork(cache.SelectorArchitecture, cache.Classes));
                selectors.Add(selector);
                FineTunePredictor(predictor, train, i, options, throttle, cancellation);
                var (trainLogp, trainCorrect) = Outputs(predictor, train, i);
                // The offline selector recipe, from the serving weights, at the online update's epochs and rate.
                var selectorSettings = new SelectorTrainingSettings { Architecture = cache.SelectorArchitecture, Epochs = options.Epochs, LearningRate = options.LearningRate };
                SelectorTraining.FineTune(selector, trainLogp, trainCorrect, predictor.Classes, selectorSettings, options.Seed + 101, CPU, throttle.Step, cancellation);
                var (calibrationLogp, calibrationCorrect) = Outputs(predictor, calibration, i);
                outputs.Add((HitProbabilities(selector, calibrationLogp, predictor.Classes), calibrationCorrect));
            }
            var calibrations = CalibrateJointly(outputs, options.AgreementTarget, options.Confidence, segmentMs);
            for (var i = 0; i < current.Count; i++)
            {
                var full = predictors[i].For(current[i].FeatureShape);
                if (ReferenceEquals(full, predictors[i])) continue;
                predictors[i].Dispose();
                predictors[i] = full;
            }
            var caches = new LearnedCache[current.Count];
            var summary = new List<string>();
            for (var i = 0; i < current.Count; i++)
            {
                var agreement = outputs[i].Correct.Count(c => c) / (double)calibration.Length;
                caches[i] = new LearnedCache(current[i].Layer, current[i].FeatureShape, new SharedModule<PredictorNetwork>(predictors[i], CPU),
                    new SharedModule<SelectorNetwork>(selectors[i], CPU), calibrations[i], new PredictorTrainingSummary(options.Epochs, options.Epochs, agreement));
                summary.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"layer {current[i].Layer}: predictor agreement {agreement:P2}, threshold {calibrations[i].Threshold:G4}, exits {calibrations[i].HitRate:P1}"));
            }
            return new UpdateCandidate(caches, train.Length, calibration.Length, rows[^1].Sequence, string.Join("; ", summary));
        }
        catch
        {
            foreach (var network in predictors) network.Dispose();
            foreach (var network in selectors) network.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Thresholds for all caches together, on calibration rows the candidate did not train on: the caches are served in
    /// order (a row exits at the first whose P(hit) reaches its threshold; rows that exit nowhere get the base answer,
    /// which agrees), and the disagreements of the whole must stay within the most an exact one-sided bound allows: the
    /// Clopper-Pearson upper bound of the disagreement rate at <paramref name="confidence"/> must stay at or below
    /// 1 − <paramref name="target"/>. So the agreement target holds with the stated confidence for the candidate as a
    /// whole, which needs far fewer rows than certifying each cache alone (rows that run everything count as
    /// agreements). Within that budget of disagreements, each threshold, earliest cache first, is first set as low as it
    /// can go; with <paramref name="segmentMs"/> (segment s ends at cache s, the last at the head) the thresholds are
    /// then set for the lowest cost within the same budget (<see cref="LowerCost"/>): the earliest cache taking the
    /// whole budget left later caches, whose exits can cost far fewer disagreements each, almost none, and more rows
    /// ran the whole network.
    /// </summary>
    public static ExitCalibration[] CalibrateJointly(IReadOnlyList<(float[] Probability, bool[] Correct)> caches, double target, double confidence,
        IReadOnlyList<double>? segmentMs = null)
    {
        var rows = caches.Count == 0 ? 0 : caches[0].Probability.Length;
        if (segmentMs is not null && segmentMs.Count != caches.Count + 1)
            throw new ArgumentException($"Expected {caches.Count + 1} segment costs (one per cache, then the head), got {segmentMs.Count}.", nameof(segmentMs));
        var allowed = AgreementBounds.AllowedDisagreements(rows, target, confidence);
        var exitedAt = Enumerable.Repeat(-1, rows).ToArray();
        var disagreements = 0;
        var thresholds = new float[caches.Count];
        for (var i = 0; i < caches.Count; i++)
        {
            var (probability, correct) = caches[i];
            var candidates = Enumerable.Range(0, rows).Where(r => exitedAt[r] < 0).OrderByDescending(r => probability[r]).ToArray();
            thresholds[i] = float.PositiveInfinity;
            var used = 0;
            var taken = 0;
            var chosenTaken = 0;
            var chosenUsed = 0;
            while (taken < candidates.Length)
            {
                var p = probability[candidates[taken]];
                while (taken < candidates.Length && probability[candidates[taken]] == p)
                {
                    if (!correct[candidates[taken]]) used++;
                    taken++;
                }
                if (disagreements + used > allowed) break;
                thresholds[i] = p;
                chosenTaken = taken;
                chosenUsed = used;
            }
            for (var j = 0; j < chosenTaken; j++) exitedAt[candidates[j]] = i;
            disagreements += chosenUsed;
        }
        if (segmentMs is not null && rows > 0)
        {
            LowerCost(caches, thresholds, segmentMs, allowed);
            exitedAt = Serve(caches, thresholds).Exit.ToArray();
        }
        return caches.Select((cache, i) =>
        {
            var exits = Enumerable.Range(0, rows).Where(r => exitedAt[r] == i).ToArray();
            var right = exits.Count(r => cache.Correct[r]);
            var totalCorrect = cache.Correct.Count(c => c);
            return new ExitCalibration(thresholds[i], exits.Length == 0 ? double.NaN : (double)right / exits.Length, totalCorrect == 0 ? 0 : (double)right / totalCorrect,
                rows == 0 ? 0 : (double)exits.Length / rows, rows, rows == 0 ? 0 : (double)totalCorrect / rows) { CorrectRows = totalCorrect };
        }).ToArray();
    }

    /// <summary>The calibration rows served with <paramref name="thresholds"/> (<see cref="ExitSimulation"/>).</summary>
    private static ExitOutcomes Serve(IReadOnlyList<(float[] Probability, bool[] Correct)> caches, float[] thresholds) =>
        ExitSimulation.Serve(caches.Select(c => c.Probability).ToArray(), thresholds, caches.Select(c => c.Correct).ToArray());

    /// <summary>
    /// Lowers the mean cost of serving the rows within <paramref name="allowed"/> disagreements, from the greedy
    /// thresholds. A move of one threshold alone cannot trade the first cache's exits for the later ones' (raising it
    /// only sends rows to the whole network), so for each price λ of a disagreement (in ms, on a geometric scale) the
    /// thresholds first minimise cost + λ · disagreements one cache at a time until none moves, which sets how the
    /// caches share the rows; then, within the budget, the one move of a single threshold that saves the most is made
    /// until none saves anything, which spends what the price left of the budget. Each move is exact (a sweep over the
    /// cache's own P(hit) values). The cheapest outcome within the budget is kept, the greedy one if none is cheaper.
    /// </summary>
    private static void LowerCost(IReadOnlyList<(float[] Probability, bool[] Correct)> caches, float[] thresholds, IReadOnlyList<double> segmentMs, int allowed)
    {
        var n = caches.Count;
        var rows = caches[0].Probability.Length;
        var reach = ReachMs(segmentMs, n);
        (double Cost, int Wrong) Serve(float[] t)
        {
            var served = CacheUpdater.Serve(caches, t);
            double cost = 0;
            foreach (var exit in served.Exit) cost += exit == ExitSimulation.FullModel ? reach[n] : reach[exit];
            return (cost, served.Rows - served.Agreed);
        }
        var order = new int[rows];
        var otherCost = new double[rows];
        var otherWrong = new bool[rows];
        // The best level for cache i with the others fixed, and the change in cost it brings: with a price, minimising
        // cost + price * disagreements; without (price 0), minimising cost within the budget.
        (float Level, double CostChange) Best(float[] t, int i, double price)
        {
            var m = 0;
            var fixedWrong = 0;
            for (var r = 0; r < rows; r++)
            {
                var exit = -1;
                for (var j = 0; j < i && exit < 0; j++) if (ExitSimulation.Fires(caches[j].Probability[r], t[j])) exit = j;
                if (exit >= 0)
                {
                    if (!caches[exit].Correct[r]) fixedWrong++;
                    continue;
                }
                for (var j = i + 1; j < n && exit < 0; j++) if (ExitSimulation.Fires(caches[j].Probability[r], t[j])) exit = j;
                otherCost[r] = exit < 0 ? reach[n] : reach[exit];
                otherWrong[r] = exit >= 0 && !caches[exit].Correct[r];
                if (otherWrong[r]) fixedWrong++;
                order[m++] = r;
            }
            var (probability, correct) = caches[i];
            Array.Sort(order, 0, m, Comparer<int>.Create((x, y) => probability[y].CompareTo(probability[x])));
            // Relative to cache i letting every row pass; the current level's own figures come out of the same sweep.
            float choice = float.PositiveInfinity;
            double cost = 0, bestObjective = 0, bestCost = 0, currentCost = 0;
            var wrong = 0;
            var budget = price > 0 ? int.MaxValue : allowed - fixedWrong;
            for (var k = 0; k < m;)
            {
                var level = probability[order[k]];
                while (k < m && probability[order[k]] == level)
                {
                    var r = order[k++];
                    cost += reach[i] - otherCost[r];
                    wrong += (correct[r] ? 0 : 1) - (otherWrong[r] ? 1 : 0);
                }
                if (ExitSimulation.Fires(level, t[i])) currentCost = cost;
                var objective = cost + price * wrong;
                if (wrong <= budget && objective < bestObjective - 1e-12)
                {
                    bestObjective = objective;
                    bestCost = cost;
                    choice = level;
                }
            }
            return (choice, bestCost - currentCost);
        }
        var best = (float[])thresholds.Clone();
        var (bestTotal, _) = Serve(best);
        var trial = (float[])thresholds.Clone();
        for (var price = 0.01 * reach[n]; price <= 1000 * reach[n]; price *= 1.5)
        {
            for (var round = 0; round < 8; round++)
            {
                var moved = false;
                for (var i = 0; i < n; i++)
                {
                    var (level, _) = Best(trial, i, price);
                    moved |= level != trial[i];
                    trial[i] = level;
                }
                if (!moved) break;
            }
            var (cost, wrong) = Serve(trial);
            if (wrong > allowed) continue;
            var polished = (float[])trial.Clone();
            for (var move = 0; move < 4 * n; move++)
            {
                var chosen = -1;
                var (level, saving) = (0f, -1e-9);
                for (var i = 0; i < n; i++)
                {
                    var (l, deltaCost) = Best(polished, i, 0);
                    if (deltaCost < saving)
                    {
                        (chosen, level, saving) = (i, l, deltaCost);
                    }
                }
                if (chosen < 0) break;
                polished[chosen] = level;
                (cost, wrong) = Serve(polished);
            }
            if (wrong <= allowed && cost < bestTotal - 1e-9)
            {
                bestTotal = cost;
                polished.CopyTo(best, 0);
            }
        }
        best.CopyTo(thresholds, 0);
    }

    /// <summary>
    /// What a row costs that stops at segment s: the sum of <paramref name="segmentMs"/>[0..s] (segment s ends at cache s;
    /// index <paramref name="caches"/> is the head, a full run).
    /// </summary>
    private static double[] ReachMs(IReadOnlyList<double> segmentMs, int caches)
    {
        var reach = new double[caches + 1];
        for (var s = 0; s <= caches; s++) reach[s] = (s == 0 ? 0 : reach[s - 1]) + segmentMs[s];
        return reach;
    }

    /// <summary>A row the update can learn from: every cache layer's features and the base answer.</summary>
    public static bool Complete(ShadowRow row) => row.BaseProbabilities is not null && row.Features.All(f => f is not null);

    /// <summary>
    /// Serves <paramref name="rows"/> (sampled, complete) with <paramref name="caches"/> at <paramref name="thresholds"/>
    /// in a simulation: each row exits at the first cache whose P(hit) reaches its threshold; cost from the per-segment
    /// timings (<paramref name="segmentMs"/>: segment s ends at cache s, the last one at the head).
    /// </summary>
    public static SimulatedServing Simulate(IReadOnlyList<LearnedCache> caches, IReadOnlyList<float> thresholds, IReadOnlyList<ShadowRow> rows, double[] segmentMs, double confidence)
    {
        var outputs = caches.Select((cache, i) =>
        {
            float[] logp;
            // Window rows hold reduced features: a predictor that reduces reads them through a copy without that step;
            // one that does not (FC, Conv) reads them as they are, and copying its weights would cost for nothing.
            if (cache.ReducedFeatureShape == cache.FeatureShape) (logp, _) = Outputs(cache.Predictor.Module, rows, i);
            else
            {
                using var predictor = ReducedCopy(cache);
                (logp, _) = Outputs(predictor, rows, i);
            }
            var classes = cache.Classes;
            var probability = HitProbabilities(cache.Selector.Module, logp, classes);
            var predicted = Enumerable.Range(0, rows.Count).Select(r => EarlyExitEngine.ArgMax(logp.AsSpan(r * classes, classes))).ToArray();
            return (probability, predicted);
        }).ToArray();
        var served = ExitSimulation.Serve(outputs.Select(o => o.probability).ToArray(), thresholds,
            outputs.Select(o => o.predicted.Select((p, r) => p == rows[r].BaseClass).ToArray()).ToArray());
        var reach = ReachMs(segmentMs, caches.Count);
        double cost = 0;
        var exits = new double[caches.Count + 1];
        var outcomes = new (int Exit, bool Agreed)[rows.Count];
        for (var r = 0; r < rows.Count; r++)
        {
            var exit = served.Exit[r];
            // Segment s ends at cache s; the last segment (index caches.Count) is the head.
            var last = exit == ExitSimulation.FullModel ? caches.Count : exit;
            outcomes[r] = (exit, served.RowAgreed[r]);
            exits[last]++;
            cost += reach[last];
        }
        var (lower, upper) = AgreementBounds.Exact(served.Agreed, rows.Count, confidence);
        return new SimulatedServing(rows.Count, served.Agreed, lower, upper, rows.Count == 0 ? 0 : cost / rows.Count, exits.Select(e => e / Math.Max(1, rows.Count)).ToArray(), outcomes);
    }

    /// <summary>
    /// A CPU copy of the cache's predictor that reads its reduced features (<see cref="LearnedCache.ReducedFeatureShape"/>,
    /// what window rows hold): the same parameters, without the parameter-free first step.
    /// </summary>
    private static PredictorNetwork ReducedCopy(LearnedCache cache)
    {
        var reduced = cache.ReducedFeatureShape;
        return Clone(cache.Predictor, () => PredictorNetwork.Create(cache.PredictorArchitecture, reduced.Size, cache.Classes, reduced));
    }

    private static TModule Clone<TModule>(SharedModule<TModule> shared, Func<TModule> create) where TModule : nn.Module
    {
        var clone = SeededInit.Unseeded(create);
        try
        {
            lock (shared.Gate)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var source = shared.Module.state_dict();
                foreach (var (name, tensor) in clone.state_dict()) tensor.copy_(source[name].cpu());
            }
            return clone;
        }
        catch
        {
            clone.Dispose();
            throw;
        }
    }

    /// <summary>The offline predictor recipe (<see cref="PredictorTrainingOptions"/>' defaults), from the serving weights, at the update's epochs and rate.</summary>
    private static void FineTunePredictor(PredictorNetwork predictor, ShadowRow[] rows, int cache, OnlineCacheOptions options, CpuThrottle throttle, CancellationToken cancellation)
    {
        var recipe = new PredictorTrainer.Options { Epochs = options.Epochs, LearningRate = options.LearningRate, CancellationToken = cancellation };
        PredictorFineTuning.Run(predictor, rows.Length, (r, features, teacher) =>
        {
            var row = rows[r];
            CheckSize(row, cache, features.Length);
            row.Features[cache]!.AsSpan().CopyTo(features);
            // log(probabilities) = logits up to a constant per row: the same softened distribution.
            for (var c = 0; c < teacher.Length; c++) teacher[c] = MathF.Log(Math.Max(row.BaseProbabilities![c], 1e-30f));
            return row.BaseClass;
        }, recipe, options.Seed + cache, $"layer-{cache} predictor (online update)", throttle.Step);
    }

    /// <summary>The predictor's log-probabilities on the rows' features of one cache, and whether it agrees with the base model.</summary>
    private static (float[] LogProbabilities, bool[] Correct) Outputs(PredictorNetwork predictor, IReadOnlyList<ShadowRow> rows, int cache)
    {
        var size = predictor.InputSize;
        var classes = predictor.Classes;
        var logp = new float[rows.Count * classes];
        var correct = new bool[rows.Count];
        using var noGrad = no_grad();
        // One pooled chunk for every call: a chunk of early-layer activations is megabytes, and a fresh one per chunk
        // made the updater the main source of full (gen 2) collections in a serving process.
        const int Chunk = 256;
        var features = ArrayPool<float>.Shared.Rent(Chunk * size);
        try
        {
            for (var start = 0; start < rows.Count; start += Chunk)
            {
                using var scope = NewDisposeScope();
                var n = Math.Min(Chunk, rows.Count - start);
                for (var i = 0; i < n; i++)
                {
                    CheckSize(rows[start + i], cache, size);
                    rows[start + i].Features[cache]!.CopyTo(features, i * size);
                }
                predictor.forward(from_array(features).narrow(0, 0, n * size).view(n, size)).data<float>().CopyTo(logp, start * classes, 0);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(features);
        }
        for (var r = 0; r < rows.Count; r++) correct[r] = EarlyExitEngine.ArgMax(logp.AsSpan(r * classes, classes)) == rows[r].BaseClass;
        return (logp, correct);
    }

    /// <summary>A window row must hold the reduced features the predictor copy reads: anything else is a capture bug, not data.</summary>
    private static void CheckSize(ShadowRow row, int cache, int size)
    {
        var length = row.Features[cache]?.Length ?? 0;
        if (length != size)
            throw new InvalidOperationException($"Shadow row {row.Sequence} holds {length} feature values for cache {cache}; its predictor reads {size} (the reduced features the window keeps).");
    }

    private static float[] HitProbabilities(SelectorNetwork selector, float[] logProbabilities, int classes)
    {
        var rows = logProbabilities.Length / classes;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        return selector.HitProbability(tensor(logProbabilities, [rows, classes])).data<float>().ToArray();
    }
}

/// <summary>Keeps background work within a share of one core: after each step, sleeps in proportion to the step's time.</summary>
internal sealed class CpuThrottle(double budget, Action? beforeStep = null)
{
    /// <summary>Time spent working (not sleeping) so far.</summary>
    public TimeSpan Busy { get; private set; }

    public void Step(Action work)
    {
        beforeStep?.Invoke();
        var start = Stopwatch.GetTimestamp();
        work();
        var elapsed = Stopwatch.GetElapsedTime(start);
        Busy += elapsed;
        if (budget < 1) Thread.Sleep(TimeSpan.FromTicks((long)(elapsed.Ticks * (1 / budget - 1))));
    }
}
