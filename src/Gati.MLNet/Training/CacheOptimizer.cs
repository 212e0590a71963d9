using System.Globalization;
using System.Text;
using Gati.MLNet.Policy;
using Gati.MLNet.Transforms;

namespace Gati.MLNet.Training;

/// <summary>What a cache plan must satisfy.</summary>
/// <param name="MinimumAgreement">Least share of held-out rows whose answer equals the base model's (e.g. 0.99): overall
/// agreement, the promise online caches' <c>AgreementTarget</c> also keeps.</param>
/// <param name="MemoryBudgetBytes">Most memory for all chosen caches' parameters. Null: the larger of the base model's own
/// parameter memory and 64 MB (<see cref="CacheOptimizer.DefaultMemoryBudget"/>), so caches at most double a large model's
/// memory and an FC(1024) on the 200,704 values of a 224 x 224 ResNet-18's first cut points (822 MB) stays out unless a
/// budget is given; <see cref="long.MaxValue"/> for no limit.</param>
/// <param name="BatchSize">Batch size the latency is minimised for (1, or the measurements' batch size).</param>
/// <param name="Confidence">
/// When set (e.g. 0.95), the agreement target must hold at this one-sided confidence: the exact (Clopper-Pearson) lower
/// bound of agreement on the held-out rows, not only the point estimate, must reach <paramref name="MinimumAgreement"/>.
/// Null keeps the point estimate (the bound is still reported).
/// </param>
public sealed record CacheConstraints(double MinimumAgreement = 0.99, long? MemoryBudgetBytes = null, int BatchSize = 1, double? Confidence = null);

/// <summary>The optimizer's choice and the figures it expects on held-out data.</summary>
public sealed record CachePlan
{
    /// <summary>Chosen candidates (indices into <see cref="CacheMeasurements.Candidates"/>), by layer.</summary>
    public required IReadOnlyList<CacheCandidate> Chosen { get; init; }

    /// <summary>Expected mean time per input (batch 1) or per batch, ms.</summary>
    public required double ExpectedMs { get; init; }

    /// <summary>The full model's time on the same terms, ms.</summary>
    public required double FullMs { get; init; }

    /// <summary>Expected agreement with the base model.</summary>
    public required double ExpectedAgreement { get; init; }

    /// <summary>Share of rows expected to exit early.</summary>
    public required double ExpectedHitRate { get; init; }

    /// <summary>Held-out rows the figures come from.</summary>
    public int Rows { get; init; }

    /// <summary>The confidence of <see cref="AgreementLowerBound"/> and <see cref="DisagreementAmongExitsUpperBound"/> (the constraint's, else 0.95).</summary>
    public double Confidence { get; init; } = 0.95;

    /// <summary>One-sided exact (Clopper-Pearson) lower bound of agreement on the held-out rows at <see cref="Confidence"/>.</summary>
    public double AgreementLowerBound { get; init; }

    /// <summary>One-sided exact upper bound of the disagreement rate among the rows that exit early (rows run in full agree).</summary>
    public double DisagreementAmongExitsUpperBound { get; init; }

    /// <summary>Memory of the chosen caches' parameters.</summary>
    public required long MemoryBytes { get; init; }

    /// <summary>Plans evaluated.</summary>
    public required long PlansEvaluated { get; init; }

    /// <summary>How the plan was searched (exhaustive or greedy).</summary>
    public required string Search { get; init; }

    /// <summary>Expected speedup over the full model.</summary>
    public double ExpectedSpeedup => FullMs / ExpectedMs;

    /// <summary>
    /// The plan the same predictors would give with oracle selectors (each cache exits exactly where its predictor agrees
    /// with the base model; <see cref="CacheMeasurements.WithOracleSelectors"/>), under the same memory budget: the best
    /// any selector could reach. Null on a plan that was itself made with oracle selectors.
    /// </summary>
    public CachePlan? Oracle { get; init; }

    /// <summary>Human-readable reasons: candidates, constraints, the chosen set and each cache's contribution.</summary>
    public string Explanation { get; init; } = "";
}

/// <summary>
/// Chooses which layers carry a cache, and which architecture on each (the first form of the paper's optimizer):
/// from held-out measurements (<see cref="CacheMeasurements"/>), the set that minimises expected latency on the
/// measured device while keeping agreement with the base model at or above a target and the caches' memory
/// within a budget. Expected figures are exact averages over the held-out rows (each row exits at the first chosen
/// cache whose selector fires), so correlations between layers are accounted for. The search is exhaustive when
/// the plans number at most 2^18, greedy (add the cache that lowers latency most, while constraints hold) beyond.
/// </summary>
public static class CacheOptimizer
{
    private const long ExhaustiveLimit = 1 << 18;

    /// <summary>Chooses the caches.</summary>
    public static CachePlan Choose(CacheMeasurements measurements, CacheConstraints constraints) => Choose(measurements, constraints, ExhaustiveLimit);

    /// <summary>Chooses the caches, enumerating every plan only when there are at most <paramref name="exhaustiveLimit"/>.</summary>
    internal static CachePlan Choose(CacheMeasurements measurements, CacheConstraints constraints, long exhaustiveLimit)
    {
        ArgumentNullException.ThrowIfNull(measurements);
        ArgumentNullException.ThrowIfNull(constraints);
        if (constraints.MinimumAgreement is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(constraints), constraints.MinimumAgreement, "Agreement target must be in [0, 1].");
        if (constraints.Confidence is { } c && (c is <= 0.5 or >= 1 || double.IsNaN(c)))
            throw new ArgumentOutOfRangeException(nameof(constraints), constraints.Confidence, "Confidence must be in (0.5, 1).");
        if (constraints.BatchSize != 1 && constraints.BatchSize != measurements.BatchSize)
            throw new ArgumentException($"Latency was measured at batch 1 and {measurements.BatchSize}; optimise for one of those.", nameof(constraints));
        var byLayer = measurements.Candidates.GroupBy(c => c.Layer).OrderBy(g => g.Key).Select(g => g.ToArray()).ToArray();
        var evaluator = new Evaluator(measurements, constraints.BatchSize);
        var empty = evaluator.Evaluate([]);
        var best = empty;
        var memoryBudget = constraints.MemoryBudgetBytes ?? DefaultMemoryBudget(measurements.BaseParameterBytes);
        bool Better(Evaluator.Result candidate, Evaluator.Result incumbent) => CacheOptimizer.Better(candidate, incumbent, constraints, measurements.Rows, memoryBudget);
        long evaluated = 1;
        // Plans of at most one candidate per group (layer), none included; counting stops once past the limit.
        long Plans(CacheCandidate[][] groups) => groups.Aggregate(1L, (n, g) => n > exhaustiveLimit ? n : n * (g.Length + 1));
        // The best of every such plan, the full model included.
        Evaluator.Result Exhaustive(CacheCandidate[][] groups)
        {
            var top = empty;
            var choice = new int[groups.Length];
            while (Increment(choice, groups))
            {
                var result = evaluator.Evaluate(choice.Select((c, l) => c == 0 ? null : groups[l][c - 1]).OfType<CacheCandidate>().ToArray());
                evaluated++;
                if (Better(result, top)) top = result;
            }
            return top;
        }
        string search;
        var plans = Plans(byLayer);
        if (plans <= exhaustiveLimit)
        {
            search = $"exhaustive over {plans} plans";
            best = Exhaustive(byLayer);
        }
        else
        {
            // Too many plans to enumerate (several thresholds or architectures per layer). Starting points: greedy (add the
            // candidate that lowers latency most while the constraints hold) and, for each strictness rank, the best plan
            // among the candidates of that rank (the r-th highest threshold of each layer and architecture: for thresholds
            // calibrated at a few precision targets, roughly one target everywhere). Greedy alone spends the agreement budget
            // on the first cache that pays most; from each start, moves that change one or two layers' choice (another
            // candidate there, e.g. a stricter threshold, or none) run until none helps, and the best end point wins.
            var starts = new List<Evaluator.Result>();
            while (true)
            {
                var current = best;
                foreach (var candidate in measurements.Candidates.Where(c => current.Set.All(s => s.Layer != c.Layer)))
                {
                    var result = evaluator.Evaluate([.. current.Set, candidate]);
                    evaluated++;
                    if (Better(result, best)) best = result;
                }
                if (ReferenceEquals(best, current)) break;
            }
            starts.Add(best);
            var ranked = measurements.Candidates.GroupBy(c => (c.Layer, c.Architecture.ToString()))
                .SelectMany(g => g.OrderByDescending(c => float.IsNaN(c.Threshold) ? float.PositiveInfinity : c.Threshold).Select((c, rank) => (c, rank)))
                .GroupBy(x => x.rank, x => x.c).ToArray();
            foreach (var rank in ranked)
            {
                var subset = rank.GroupBy(c => c.Layer).OrderBy(g => g.Key).Select(g => g.ToArray()).ToArray();
                if (Plans(subset) <= exhaustiveLimit) starts.Add(Exhaustive(subset));
            }
            foreach (var start in starts)
            {
                var local = start;
                while (true)
                {
                    var current = local;
                    foreach (var result in Neighbours(local.Set, byLayer).Select(evaluator.Evaluate))
                    {
                        evaluated++;
                        if (Better(result, local)) local = result;
                    }
                    if (ReferenceEquals(local, current)) break;
                }
                if (Better(local, best)) best = local;
            }
            search = $"greedy and {starts.Count - 1} single-rank plans as starting points, then moves of one or two layers until none helps (too many plans to enumerate)";
        }
        var confidence = constraints.Confidence ?? 0.95;
        var (agreed, exits) = Counts(best, measurements.Rows);
        var plan = new CachePlan
        {
            Chosen = best.Set.OrderBy(c => c.Layer).ToArray(),
            ExpectedMs = best.Ms,
            FullMs = empty.Ms,
            ExpectedAgreement = best.Agreement,
            ExpectedHitRate = best.HitRate,
            Rows = measurements.Rows,
            Confidence = confidence,
            AgreementLowerBound = AgreementBounds.ClopperPearsonLower(agreed, measurements.Rows, confidence),
            DisagreementAmongExitsUpperBound = exits == 0 ? 0 : AgreementBounds.ClopperPearsonUpper(measurements.Rows - agreed, exits, confidence),
            MemoryBytes = best.Bytes,
            PlansEvaluated = evaluated,
            Search = search,
        };
        plan = plan with { Explanation = Explain(plan, measurements, constraints, evaluator, memoryBudget) };
        if (measurements.OracleSelectors) return plan;
        var oracle = Choose(measurements.WithOracleSelectors(), constraints with { MemoryBudgetBytes = memoryBudget, Confidence = null }, exhaustiveLimit);
        var text = oracle.Chosen.Count == 0
            ? "With oracle selectors (each cache exiting exactly where its predictor agrees with the base model) no cache would pay off either."
            : string.Create(CultureInfo.InvariantCulture,
                $"With oracle selectors (each cache exiting exactly where its predictor agrees with the base model: the best any selector could do with these predictors): " +
                $"{string.Join(", ", oracle.Chosen.Select(c => $"layer {c.Layer} {c.Architecture}").Distinct())}, {oracle.ExpectedMs:F3} ms ({oracle.ExpectedSpeedup:F2}x), " +
                $"{oracle.ExpectedHitRate:P1} of inputs exit early, agreement 100 %. The selectors reach {plan.ExpectedSpeedup:F2}x of that {oracle.ExpectedSpeedup:F2}x.");
        return plan with { Oracle = oracle, Explanation = plan.Explanation + Environment.NewLine + text + Environment.NewLine };
    }

    /// <summary>
    /// The exit precisions <c>gati optimize</c> re-thresholds every candidate for
    /// (<see cref="Transforms.LearnedCachesTransformer.WithThresholdVariants"/>) before choosing.
    /// </summary>
    public static IReadOnlyList<double> DefaultPrecisionTargets { get; } = [0.97, 0.98, 0.99, 0.995, 0.998, 0.999];

    /// <summary>The memory budget when none is given: the larger of the base model's parameter memory and 64 MB.</summary>
    public static long DefaultMemoryBudget(long baseParameterBytes) => Math.Max(64L << 20, baseParameterBytes);

    /// <summary>A transformer with only the plan's caches (one per layer), ready for the early-exit engine.</summary>
    public static LearnedCachesTransformer Apply(CachePlan plan, LearnedCachesTransformer candidates)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(candidates);
        return candidates.WithCaches(plan.Chosen.Select(c => candidates.Caches[c.Index]));
    }

    /// <summary>Rows that agree, and rows that exit early, of a result over <paramref name="rows"/> rows.</summary>
    private static (long Agreed, long Exits) Counts(Evaluator.Result result, int rows) =>
        ((long)Math.Round(result.Agreement * rows), (long)Math.Round(result.HitRate * rows));

    private static bool Better(Evaluator.Result candidate, Evaluator.Result best, CacheConstraints constraints, int rows, long budget)
    {
        if (candidate.Agreement < constraints.MinimumAgreement) return false;
        if (constraints.Confidence is { } confidence && candidate.Set.Count > 0
            && AgreementBounds.ClopperPearsonLower(Counts(candidate, rows).Agreed, rows, confidence) < constraints.MinimumAgreement) return false;
        if (candidate.Bytes > budget) return false;
        if (candidate.Ms < best.Ms - 1e-9) return true;
        return Math.Abs(candidate.Ms - best.Ms) <= 1e-9 && candidate.Set.Count < best.Set.Count;
    }

    /// <summary>The plans that differ from <paramref name="set"/> in the choice (a candidate or none) of one layer, or of two.</summary>
    private static IEnumerable<CacheCandidate[]> Neighbours(IReadOnlyList<CacheCandidate> set, CacheCandidate[][] byLayer)
    {
        var choice = byLayer.Select(g => set.FirstOrDefault(c => c.Layer == g[0].Layer)).ToArray();
        CacheCandidate?[] Options(int l) => [null, .. byLayer[l]];
        CacheCandidate[] Plan(CacheCandidate?[] c) => c.OfType<CacheCandidate>().ToArray();
        for (var a = 0; a < byLayer.Length; a++)
        {
            var keepA = choice[a];
            foreach (var optionA in Options(a))
            {
                if (optionA == keepA) continue;
                choice[a] = optionA;
                yield return Plan(choice);
                for (var b = a + 1; b < byLayer.Length; b++)
                {
                    var keepB = choice[b];
                    foreach (var optionB in Options(b))
                    {
                        if (optionB == keepB) continue;
                        choice[b] = optionB;
                        yield return Plan(choice);
                    }
                    choice[b] = keepB;
                }
            }
            choice[a] = keepA;
        }
    }

    private static bool Increment(int[] choice, CacheCandidate[][] byLayer)
    {
        for (var i = 0; i < choice.Length; i++)
        {
            if (++choice[i] <= byLayer[i].Length) return true;
            choice[i] = 0;
        }
        return false;
    }

    private static string Explain(CachePlan plan, CacheMeasurements m, CacheConstraints constraints, Evaluator evaluator, long memoryBudget)
    {
        var unit = constraints.BatchSize == 1 ? "ms per input (batch 1)" : $"ms per batch of {constraints.BatchSize}";
        var text = new StringBuilder();
        var budget = memoryBudget == long.MaxValue ? ""
            : string.Create(CultureInfo.InvariantCulture, $", cache memory <= {memoryBudget / 1048576.0:F1} MB{(constraints.MemoryBudgetBytes is null ? " (default: the larger of the base model's and 64 MB)" : "")}");
        text.AppendLine(CultureInfo.InvariantCulture,
            $"Measured on {m.Rows} held-out rows on {m.Device} with {Inference.Backends.ExecutionBackends.For(m.Backend).DisplayName}. Full model: {plan.FullMs:F3} {unit}. Constraints: agreement >= {constraints.MinimumAgreement:P2}{(constraints.Confidence is { } conf ? string.Create(CultureInfo.InvariantCulture, $" at {conf:P0} confidence (exact lower bound)") : " (point estimate)")}{budget}. Search: {plan.Search}, {plan.PlansEvaluated} plans evaluated.");
        text.AppendLine();
        text.AppendLine("| layer | predictor | threshold (calibrated precision) | predictor agreement | alone: hit rate | precision | cost (ms, batch 1) | memory | chosen |");
        text.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var c in m.Candidates.OrderBy(c => c.Layer).ThenBy(c => c.Index))
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {c.Layer} | {c.Architecture} | {(float.IsNaN(c.Threshold) ? "-" : $"{c.Threshold:G4} ({c.CalibrationPrecision:P1})")} | {m.PredictorAgreement(c.Index):P2} | {c.HitRate:P1} | {(double.IsNaN(c.Precision) ? "-" : c.Precision.ToString("P2", CultureInfo.InvariantCulture))} | {c.CostMs:F3} | {c.ParameterBytes / 1048576.0:F2} MB | {(plan.Chosen.Contains(c) ? "yes" : "")} |");
        text.AppendLine();
        if (plan.Chosen.Count == 0)
        {
            text.AppendLine("No set of caches beats the full model within the constraints: the plan is the full model.");
            return text.ToString();
        }
        text.AppendLine(CultureInfo.InvariantCulture,
            $"Chosen: {string.Join(", ", plan.Chosen.Select(c => c.Describe()))}. Expected {plan.ExpectedMs:F3} {unit} " +
            $"({plan.ExpectedSpeedup:F2}x faster), agreement {plan.ExpectedAgreement:P2}, {plan.ExpectedHitRate:P1} of inputs exit early, caches use {plan.MemoryBytes / 1048576.0:F2} MB.");
        text.AppendLine(CultureInfo.InvariantCulture,
            $"Finite-sample figures ({plan.Confidence:P0} one-sided, exact Clopper-Pearson over the {plan.Rows} held-out rows): agreement at least {plan.AgreementLowerBound:P2}; " +
            $"disagreement among early exits at most {plan.DisagreementAmongExitsUpperBound:P2}. The rows also chose the plan (and, in part, calibrated the thresholds), so " +
            $"the bound is optimistic by that selection; the test split (gati evaluate-early-exit) is the independent check.");
        foreach (var c in plan.Chosen)
        {
            var without = evaluator.Evaluate(plan.Chosen.Where(x => x != c).ToArray());
            text.AppendLine(CultureInfo.InvariantCulture,
                $"- without layer {c.Layer}: {without.Ms:F3} ms, agreement {without.Agreement:P2} — this cache saves {without.Ms - plan.ExpectedMs:F3} ms at a cost of {c.CostMs:F3} ms per visit.");
        }
        return text.ToString();
    }

    /// <summary>Exact expected latency and agreement of a set of caches over the held-out rows.</summary>
    private sealed class Evaluator(CacheMeasurements m, int batchSize)
    {
        private readonly int _layers = m.BlockMs.Count - 1;

        public sealed record Result(IReadOnlyList<CacheCandidate> Set, double Ms, double Agreement, double HitRate, long Bytes);

        /// <summary>Time of part p (p &lt; L: cut point p to p + 1, 0 the input; L the head) at b rows, interpolated between the batch-1 and batch-B timings.</summary>
        private double Part(int p, int b) => Interpolate(m.BlockMs[p], m.BlockBatchMs[p], b);

        private double Interpolate(double one, double many, int b) =>
            m.BatchSize == 1 || b <= 1 ? one * Math.Max(b, 1) : one + (many - one) * (b - 1) / (m.BatchSize - 1);

        public Result Evaluate(IReadOnlyList<CacheCandidate> set)
        {
            var ordered = set.OrderBy(c => c.Layer).ToArray();
            var rows = m.Rows;
            var served = ordered.Length == 0
                ? null
                : ExitSimulation.Serve(ordered.Select(c => m.Exits[c.Index]).ToArray(), ordered.Select(c => m.Correct[c.Index]).ToArray());
            // The layer each row leaves at (L + 1: the head), for the batch timing below.
            var exitAt = new int[rows];
            for (var r = 0; r < rows; r++)
                exitAt[r] = served is null || served.Exit[r] == ExitSimulation.FullModel ? _layers + 1 : ordered[served.Exit[r]].Layer;
            var agree = served?.Agreed ?? rows;
            var hits = served?.EarlyExits ?? 0;
            double total = 0;
            var batches = 0;
            for (var start = 0; start < rows; start += batchSize)
            {
                var end = Math.Min(rows, start + batchSize);
                var alive = end - start;
                var time = 0.0;
                for (var layer = 1; layer <= _layers && alive > 0; layer++)
                {
                    time += Part(layer - 1, alive);
                    foreach (var c in ordered)
                    {
                        if (c.Layer != layer) continue;
                        time += Interpolate(c.CostMs, c.CostBatchMs, alive);
                        for (var r = start; r < end; r++) if (exitAt[r] == layer) alive--;
                    }
                }
                if (alive > 0) time += Part(_layers, alive);
                total += time;
                batches++;
            }
            return new Result(ordered, total / batches, (double)agree / rows, (double)hits / rows, ordered.Sum(c => c.ParameterBytes));
        }
    }
}
