using Gati.MLNet.Inference.Backends;

namespace Gati.Cli.Commands;

/// <summary><c>gati optimize</c>: choose which candidate caches to keep.</summary>
internal static class OptimizeCommand
{
    public static Command Create()
    {
        var arguments = new CommandArguments();
        var model = new Option<string>("--model", "-m") { Description = "Model zip with candidate caches (gati fit-caches).", Required = true };
        var agreement = new Option<double>("--agreement-target") { Description = "Least agreement with the base model on held-out rows.", DefaultValueFactory = _ => 0.99 }.Share();
        var memory = new Option<double?>("--memory-budget-mb") { Description = "Most memory for the chosen caches' parameters, in MB (default: the larger of the base model's parameter memory and 64 MB)." }.Positive();
        var batchSize = new Option<int>("--batch-size") { Description = "Batch size to minimise latency for (timings are taken at 1 and at this size).", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var holdoutRows = new Option<long>("--holdout-rows") { Description = "Measure on the last N rows of the training split (held out from predictor training; use fit-caches' value).", DefaultValueFactory = _ => 5000 }.AtLeast(2L);
        var confidence = new Option<double?>("--confidence") { Description = "Require the agreement target at this one-sided confidence (exact Clopper-Pearson lower bound on the held-out rows), e.g. 0.95; default: as a point estimate (the bound is reported either way)." }.Require(v => v is null or (> 0.5 and < 1), "must be above 0.5 and below 1");
        var freshRows = new Option<long?>("--fresh-rows") { Description = "Measure on the N training rows just before the held-out rows instead: rows no predictor, selector or threshold was fitted on (fit-caches' --train-rows must stop before them), so the agreement bound is not flattered by the rows the thresholds were calibrated on." }.Require(v => v is null or >= 2, "must be at least 2");
        var timingRuns = new Option<int>("--timing-runs") { Description = "Timed repetitions per model part.", DefaultValueFactory = _ => 200 }.AtLeast(1);
        var output = new Option<string>("--output", "-o") { Description = "Model zip to write with the chosen caches only (plus the plan as <output>.plan.md).", Required = true };
        var targets = new Option<string>("--precision-targets")
        {
            Description = "Exit precisions, comma-separated, to re-threshold every candidate for (from its calibration curve, no data needed), so the plan picks each cache's threshold as well as its layer: a looser one early, a stricter one later; 'none' keeps the fitted thresholds only.",
            DefaultValueFactory = _ => string.Join(",", CacheOptimizer.DefaultPrecisionTargets.Select(t => t.ToString(CultureInfo.InvariantCulture))),
        }.ParsedBy(v => ParsePrecisionTargets(v));
        var more = new Option<string[]>("--more-candidates") { Description = "Further fit-caches zips on the same base model (e.g. other predictor architectures fitted later) whose caches join the candidates.", AllowMultipleArgumentsPerToken = true };
        var command = arguments.CreateCommand("optimize", "Choose the layers (and architecture per layer) whose caches minimise expected latency on this device under an agreement target and a memory budget; explain the choice.",
            [model], agreement, confidence, memory, batchSize, holdoutRows, freshRows, timingRuns, targets, output, more);
        var serving = new ServingArguments();
        serving.AddTo(command);
        command.SetRun(arguments.Runtime, (result, _) =>
        {
            return new OptimizeRunner(AnsiConsole.Console).Run(new OptimizeSettings(result.GetValue(model)!, arguments.Dataset.Read(result), result.GetValue(agreement),
                result.GetValue(memory) is { } mb ? (long)(mb * 1048576) : null, result.GetValue(batchSize), result.GetValue(holdoutRows),
                result.GetValue(timingRuns), result.GetValue(output)!, arguments.Device(result), serving.Read(result, arguments.Device(result))[0],
                CommandLineText.Of(result)) {
                    Confidence = result.GetValue(confidence), MoreCandidates = result.GetValue(more) ?? [], FreshRows = result.GetValue(freshRows),
                    PrecisionTargets = ParsePrecisionTargets(result.GetValue(targets)!),
                });
        });
        return command;
    }

    /// <summary><c>--precision-targets</c>: comma-separated precisions in (0, 1], or <c>none</c>.</summary>
    internal static double[] ParsePrecisionTargets(string text)
    {
        if (text.Trim() == "none") return [];
        var targets = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v is > 0 and <= 1 ? v
                : throw new ArgumentException($"Precision target '{s}' is not a number in (0, 1]."))
            .ToArray();
        return targets.Length > 0 ? targets : throw new ArgumentException("Name at least one precision target, or 'none'.");
    }
}

internal sealed record OptimizeSettings(string Model, DatasetSpec Dataset, double AgreementTarget, long? MemoryBudgetBytes, int BatchSize, long HoldoutRows,
    int TimingRuns, string Output, string Device, EarlyExitEngineOptions Serving, string CommandLine = "gati optimize")
{
    /// <summary>One-sided confidence the agreement target must hold at (null: point estimate).</summary>
    public double? Confidence { get; init; }

    /// <summary>Measure on this many rows just before the held-out rows instead of on the held-out rows (null: the held-out rows).</summary>
    public long? FreshRows { get; init; }

    /// <summary>Further model zips whose caches (on the same base model) join the candidates.</summary>
    public IReadOnlyList<string> MoreCandidates { get; init; } = [];

    /// <summary>Exit precisions every candidate is also re-thresholded for (empty: the fitted thresholds only).</summary>
    public IReadOnlyList<double> PrecisionTargets { get; init; } = CacheOptimizer.DefaultPrecisionTargets;
}

/// <summary>Runs <c>gati optimize</c>.</summary>
internal sealed class OptimizeRunner(IAnsiConsole console)
{
    public int Run(OptimizeSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var context = DeviceContext.Create(ExecutionBackends.ResolveLoadDevice(settings.Serving.Backend, settings.Device));
        var loaded = context.Gati().LoadModel(settings.Model, out var schema);
        var others = new List<ITransformer>();
        LearnedCachesTransformer? merged = null;
        try
        {
            var candidates = Candidates(loaded, settings.Model);
            var parts = LoadedModel.Parts(loaded, settings.Model);
            if (settings.MoreCandidates.Count > 0)
            {
                string identity;
                identity = ModelIdentity.Of(candidates.BaseModel);
                var caches = candidates.Caches.ToList();
                foreach (var path in settings.MoreCandidates)
                {
                    var other = context.Gati().LoadModel(path, out _);
                    others.Add(other);
                    var more = Candidates(other, path);
                    if (ModelIdentity.Of(more.BaseModel) != identity)
                        throw new InvalidOperationException($"{path} has caches on another base model than {settings.Model}: candidates must share one base model.");
                    caches.AddRange(more.Caches);
                }
                candidates = merged = candidates.WithCaches(caches);
            }
            if (settings.PrecisionTargets.Count > 0)
            {
                var fitted = candidates.Caches.Count;
                var variants = candidates.WithThresholdVariants(settings.PrecisionTargets);
                merged?.Dispose();
                candidates = merged = variants;
                console.MarkupLineInterpolated($"{fitted} fitted caches, {candidates.Caches.Count - fitted} more candidates re-thresholded for exit precisions {string.Join(", ", settings.PrecisionTargets.Select(t => t.ToString("P1", CultureInfo.InvariantCulture)))}.");
            }
            var split = HeldOutSplit.Create(context, settings.Dataset, settings.HoldoutRows);
            var heldOut = parts.Inputs(settings.FreshRows is { } fresh ? split.Fresh(context, fresh) : split.HeldOut);
            var rowsText = settings.FreshRows is { } f ? $"{f} fresh rows (just before the {settings.HoldoutRows} held-out rows)" : $"{settings.HoldoutRows} held-out rows";
            var backend = ExecutionBackends.For(settings.Serving.Backend).DisplayName;
            console.MarkupLineInterpolated($"Measuring {candidates.Caches.Count} candidate caches on {rowsText} with {backend} (batch 1 and {settings.BatchSize})...");
            var measurements = CacheMeasurements.Measure(candidates, heldOut, settings.BatchSize, settings.TimingRuns, settings.Serving.Backend, settings.Serving);
            var plan = CacheOptimizer.Choose(measurements, new CacheConstraints(settings.AgreementTarget, settings.MemoryBudgetBytes, settings.BatchSize, settings.Confidence));
            console.WriteLine(plan.Explanation);
            using var chosen = CacheOptimizer.Apply(plan, candidates);
            var measured = MeasuredSpeedup(context, parts, chosen, heldOut, settings);
            var check = string.Create(CultureInfo.InvariantCulture,
                $"Check on {backend}: expected speedup {plan.ExpectedSpeedup:F2}x (against the engine's own full model), measured {measured.Speedup:F2}x ({measured.EarlyMs:F3} ms vs {measured.FullMs:F3} ms per batch of {settings.BatchSize}, {measured.Calls} calls each, interleaved in blocks of {FullModelBaseline.BlockCalls}, on the same rows; full model: the fastest way found, {measured.FullModel}).");
            console.WriteLine(check);
            context.Gati().SaveModel(parts.With(chosen), schema, settings.Output);
            AtomicFile.WriteAllText(settings.Output + ".plan.md", $"# Cache plan for {Path.GetFileName(settings.Model)}\n\n{plan.Explanation}\n{check}\n\nCommand:\n\n```\n{settings.CommandLine}\n```\n");
            console.MarkupLineInterpolated($"Saved the base model with {plan.Chosen.Count} chosen caches to [bold]{settings.Output}[/] (plan: {settings.Output}.plan.md) in {clock.Elapsed.TotalSeconds:F0} s.");
            return 0;
        }
        finally
        {
            merged?.Dispose();
            foreach (var other in others) LoadedModel.Dispose(other);
            LoadedModel.Dispose(loaded);
        }
    }

    private static LearnedCachesTransformer Candidates(ITransformer loaded, string path) =>
        LoadedModel.Components(loaded).OfType<LearnedCachesTransformer>().LastOrDefault()
            ?? throw new InvalidOperationException($"{path} holds no learned caches: fit them with gati fit-caches.");

    /// <summary>
    /// The chosen caches against the fastest way to run the full model on these cores (<see cref="FullModelBaseline"/>),
    /// calls alternating in blocks (<see cref="FullModelBaseline.BlockCalls"/>), on up to 2,000 of the measured images.
    /// </summary>
    private (double Speedup, double EarlyMs, double FullMs, int Calls, string FullModel) MeasuredSpeedup(MLContext context, EarlyExitModel parts,
        LearnedCachesTransformer chosen, IDataView heldOut, OptimizeSettings settings)
    {
        using var early = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(chosen, settings.Serving);
        using var baseline = new FullModelBaseline(context, parts.BaseTransformer, parts.BaseModel, settings.Serving);
        var size = parts.BaseModel.InputShape.Size;
        var images = new List<float>();
        using (var cursor = heldOut.GetRowCursor([heldOut.Schema[chosen.ImageColumnName]]))
        {
            var getter = cursor.GetGetter<VBuffer<float>>(heldOut.Schema[chosen.ImageColumnName]);
            VBuffer<float> value = default;
            while (images.Count < 2000 * size && cursor.MoveNext())
            {
                getter(ref value);
                images.AddRange(value.DenseValues());
            }
        }
        var batch = settings.BatchSize;
        var batches = images.Chunk(batch * size).Where(b => b.Length == batch * size).ToArray();
        if (batches.Length == 0) throw new InvalidOperationException($"Fewer than {batch} held-out rows to time a batch on.");
        var (full, race) = baseline.Fastest(images.ToArray(), images.Count / size, size, batch);
        console.MarkupLineInterpolated($"{race}");
        for (var i = 0; i < 10; i++)
        {
            early.Predict(batches[i % batches.Length], batch);
            full.Predict(batches[i % batches.Length], batch);
        }
        double earlyMs = 0, fullMs = 0;
        // In blocks of calls, the order alternating (FullModelBaseline.BlockCalls says why).
        foreach (var (earlyTurn, first, end) in FullModelBaseline.Turns(batches.Length))
        {
            var start = Stopwatch.GetTimestamp();
            for (var i = first; i < end; i++)
            {
                if (earlyTurn) early.Predict(batches[i], batch); else full.Predict(batches[i], batch);
            }
            var ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            if (earlyTurn) earlyMs += ms; else fullMs += ms;
        }
        return (fullMs / earlyMs, earlyMs / batches.Length, fullMs / batches.Length, batches.Length, full.Name);
    }
}
