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

/// <summary>
/// One online update of learned caches (docs/online.md): for each cache, the best of its serving predictor, that
/// predictor corrected for the recent rows' class mix, and a copy fine-tuned on half the window's rows (distillation
/// from the base model's answers, as offline), then its selector fine-tuned on those rows; the thresholds calibrated
/// together on the other half (which the update did not train on) so that the agreement target holds with the stated
/// confidence; and the simulation that compares a candidate with the serving caches on fresh rows.
/// </summary>
internal static partial class CacheUpdater
{
    /// <summary>
    /// Labelled rows an update needs in the window; at least half of them must be calibration rows (every other sampled
    /// row, <see cref="Split"/>), and at least <see cref="CalibrationRowsNeeded"/>.
    /// </summary>
    public const int MinimumRows = 200;

    /// <summary>
    /// Calibration rows an update needs: <see cref="MinimumRows"/> / 2, and the fewest rows on which a perfect record
    /// shows the agreement target at the confidence (exact bound; 299 for 99 % at 95 %). On fewer, no thresholds can keep
    /// the promise at that confidence: calibrated to no disagreement on 103 rows, candidates agreed on 98.0-98.7 % of the
    /// fresh rows they were validated on (the imported ResNet-18's phased stream). A target of 100 % can never be shown
    /// (int.MaxValue).
    /// </summary>
    public static int CalibrationRowsNeeded(OnlineCacheOptions options)
    {
        if (options.AgreementTarget >= 1) return int.MaxValue;
        // A perfect record on n rows shows the target when 1 - (1 - confidence)^(1/n) <= 1 - target.
        var perfect = (int)Math.Ceiling(Math.Log(1 - options.Confidence) / Math.Log(options.AgreementTarget) - 1e-9);
        while (AgreementBounds.ClopperPearsonUpper(0, perfect, options.Confidence) > 1 - options.AgreementTarget) perfect++;
        return Math.Max(MinimumRows / 2, perfect);
    }

    public static UpdateCandidate? Train(IReadOnlyList<LearnedCache> current, IReadOnlyList<ShadowRow> window, OnlineCacheOptions options, IReadOnlyList<double> segmentMs,
        CpuThrottle throttle, CancellationToken cancellation)
    {
        if (UpdateRowsOf(window, options) is not var (rows, train, calibration)) return null;
        // The class mix of the traffic: the uniform sample's newest training rows (kept full runs are the hardest inputs'
        // classes, not the traffic's).
        var recent = train.Where(r => r.Sampled).TakeLast(options.ClassPriorRows).ToArray();
        var predictors = new List<PredictorNetwork>();
        var selectors = new List<SelectorNetwork>();
        try
        {
            var outputs = new List<(float[] Probability, bool[] Correct)>();
            var summary = new List<string>();
            // Per cache, the fine-tuning epochs its chosen predictor kept (0: the serving weights, corrected or not).
            var keptEpochs = new List<int>();
            for (var i = 0; i < current.Count; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                var cache = current[i];
                // Window rows hold the reduced features (ShadowSampler.KeepReduced): the update trains the same weights
                // read as a network on those, and puts them back on the full features when done.
                var (predictor, fineTuned, calibrationLogp, calibrationCorrect, choice) = ChoosePredictor(cache, i, train, recent, calibration, options, throttle, cancellation);
                predictors.Add(predictor);
                keptEpochs.Add(fineTuned ? options.Epochs : 0);
                var selector = Clone(cache.Selector, () => new SelectorNetwork(cache.SelectorArchitecture, cache.Classes));
                selectors.Add(selector);
                var (trainLogp, trainCorrect) = Outputs(predictor, train, i);
                // The offline selector recipe, from the serving weights, at the online update's epochs and rate.
                var selectorSettings = new SelectorTrainingSettings { Architecture = cache.SelectorArchitecture, Epochs = options.Epochs, LearningRate = options.LearningRate };
                SelectorTraining.FineTune(selector, trainLogp, trainCorrect, predictor.Classes, selectorSettings, options.Seed + 101, CPU, throttle.Step, cancellation);
                outputs.Add((HitProbabilities(selector, calibrationLogp, predictor.Classes), calibrationCorrect));
                summary.Add(choice);
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
            for (var i = 0; i < current.Count; i++)
            {
                var agreement = outputs[i].Correct.Count(c => c) / (double)calibration.Length;
                caches[i] = new LearnedCache(current[i].Layer, current[i].FeatureShape, new SharedModule<PredictorNetwork>(predictors[i], CPU),
                    new SharedModule<SelectorNetwork>(selectors[i], CPU), calibrations[i], new PredictorTrainingSummary(keptEpochs[i], options.Epochs, agreement));
                summary[i] = string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"layer {current[i].Layer}: {summary[i]}, threshold {calibrations[i].Threshold:G4}, exits {calibrations[i].HitRate:P1}");
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
    /// The thresholds the serving caches, predictors and selectors unchanged, would get from an update's calibration on
    /// <paramref name="window"/> (the same rows, split and joint calibration as <see cref="Train"/>): what recalibrating
    /// thresholds alone can buy, the most a reaction could; null when the window holds too few rows.
    /// </summary>
    public static ExitCalibration[]? Recalibrate(IReadOnlyList<LearnedCache> current, IReadOnlyList<ShadowRow> window, OnlineCacheOptions options, IReadOnlyList<double> segmentMs)
    {
        if (UpdateRowsOf(window, options) is not var (_, _, calibration)) return null;
        var outputs = current.Select((cache, i) =>
        {
            using var predictor = ReducedCopy(cache);
            var (logp, correct) = Outputs(predictor, calibration, i);
            return (HitProbabilities(cache.Selector.Module, logp, cache.Classes), correct);
        }).ToList();
        return CalibrateJointly(outputs, options.AgreementTarget, options.Confidence, segmentMs);
    }

    /// <summary>
    /// The predictor a candidate takes for one cache (on the reduced features), of three: the serving weights as they
    /// are; the serving weights with the class-prior correction fitted on the <paramref name="recent"/> training rows
    /// (<see cref="ClassPriorShift"/>); and the serving weights fine-tuned on all training rows, then corrected the same
    /// way. Fine-tuning on a few hundred rows of unchanged traffic often leaves a predictor worse than it was, and the
    /// correction cannot help where the traffic's classes did not change, so the one that agrees with the base model on
    /// the most <paramref name="calibration"/> rows is kept (ties to the earlier, simpler one). Choosing among three on
    /// the rows the thresholds are then calibrated on flatters the winner by little; the fresh rows every candidate is
    /// validated on before it serves (OnlineCaches) are not part of that choice.
    /// </summary>
    /// <returns>
    /// The chosen network, whether it is the fine-tuned one, its outputs on the calibration rows (what it was chosen by),
    /// and how it was chosen, for the update's summary.
    /// </returns>
    private static (PredictorNetwork Predictor, bool FineTuned, float[] CalibrationLogp, bool[] CalibrationCorrect, string Choice) ChoosePredictor(LearnedCache cache, int index, ShadowRow[] train, ShadowRow[] recent, ShadowRow[] calibration,
        OnlineCacheOptions options, CpuThrottle throttle, CancellationToken cancellation)
    {
        // Each network is listed before its work starts, so that a failure or a cancellation disposes it.
        var choices = new List<(string Name, PredictorNetwork Network, (float[] Logp, bool[] Correct) Outputs, double Agreement)>();
        try
        {
            // Scores the network listed last on the calibration rows.
            void Score()
            {
                var outputs = Outputs(choices[^1].Network, calibration, index);
                choices[^1] = choices[^1] with { Outputs = outputs, Agreement = outputs.Correct.Count(c => c) / (double)calibration.Length };
            }
            choices.Add(("serving", ReducedCopy(cache), default, 0));
            Score();
            if (recent.Length > 0)
            {
                choices.Add(("class prior", ReducedCopy(cache), default, 0));
                ShiftToRecentClasses(choices[^1].Network, recent, index);
                Score();
            }
            choices.Add(("fine-tuned", ReducedCopy(cache), default, 0));
            FineTunePredictor(choices[^1].Network, train, index, options, throttle, cancellation);
            if (recent.Length > 0) ShiftToRecentClasses(choices[^1].Network, recent, index);
            Score();
        }
        catch
        {
            foreach (var option in choices) option.Network.Dispose();
            throw;
        }
        var best = choices[0];
        foreach (var option in choices) if (option.Agreement > best.Agreement) best = option;
        foreach (var option in choices) if (!ReferenceEquals(option.Network, best.Network)) option.Network.Dispose();
        var all = string.Join(", ", choices.Select(o => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{o.Name} {o.Agreement:P2}")));
        return (best.Network, ReferenceEquals(best.Network, choices[^1].Network), best.Outputs.Logp, best.Outputs.Correct, string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{best.Name} predictor, agreement {best.Agreement:P2} ({all})"));
    }

    /// <summary>Adds the class-prior correction fitted on <paramref name="recent"/> rows to the predictor's class scores.</summary>
    private static void ShiftToRecentClasses(PredictorNetwork predictor, ShadowRow[] recent, int cache)
    {
        var (logp, _) = Outputs(predictor, recent, cache);
        predictor.ShiftClassScores(ClassPriorShift.Fit(logp, recent.Select(r => r.BaseClass).ToArray(), predictor.Classes));
    }

    /// <summary>
    /// The rows an update trains on and those its choice of predictors and its thresholds are calibrated on. The
    /// calibration rows are every other row of the uniform sample (<see cref="ShadowRow.Sampled"/>), so that both halves
    /// reach the newest traffic (an older/newer split left a change of popular classes to calibration alone) and so that
    /// the exact bound the thresholds are held to is a bound on the traffic's agreement. The full runs kept as training
    /// rows (<see cref="OnlineCacheOptions.CaptureFullRuns"/>) all go to training: they are the inputs no cache was sure
    /// of, over-represented against the traffic (on the imported ResNet-18's phased stream 45 % of the requests ran the
    /// whole network; at a 20 % sample and a quarter of full runs kept, about 62 % of the labelled rows did). While they
    /// were calibration rows too, a candidate's budget of disagreements was counted over rows it mostly did not exit on,
    /// and candidates held to 99 % at 95 % confidence there agreed on 98.0-98.7 % of the fresh sampled rows in four of
    /// seven attempts (two runs of that stream).
    /// </summary>
    internal static (ShadowRow[] Train, ShadowRow[] Calibration) Split(IReadOnlyList<ShadowRow> rows)
    {
        var train = new List<ShadowRow>(rows.Count);
        var calibration = new List<ShadowRow>(rows.Count / 2);
        var sampled = 0;
        foreach (var row in rows)
        {
            if (row.Sampled && sampled++ % 2 == 1) calibration.Add(row);
            else train.Add(row);
        }
        return (train.ToArray(), calibration.ToArray());
    }

    /// <summary>
    /// An update's rows: the window's newest <see cref="OnlineCacheOptions.UpdateRows"/> complete rows in order of arrival,
    /// split (<see cref="Split"/>); null while they are too few (<see cref="MinimumRows"/>, <see cref="CalibrationRowsNeeded"/>).
    /// </summary>
    private static (ShadowRow[] Rows, ShadowRow[] Train, ShadowRow[] Calibration)? UpdateRowsOf(IReadOnlyList<ShadowRow> window, OnlineCacheOptions options)
    {
        var rows = window.Where(Complete).OrderBy(r => r.Sequence).TakeLast(options.UpdateRows).ToArray();
        var (train, calibration) = Split(rows);
        return rows.Length < MinimumRows || calibration.Length < CalibrationRowsNeeded(options) ? null : (rows, train, calibration);
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
            if (!cache.ReducesFeatures) (logp, _) = Outputs(cache.Predictor.Module, rows, i);
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
