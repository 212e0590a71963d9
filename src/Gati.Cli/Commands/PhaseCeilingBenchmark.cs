using Gati.MLNet.Online;

namespace Gati.Cli.Commands;

internal sealed record PhaseCeilingSettings(string Model, DatasetSpec Dataset, long? Rows, int Requests, int PhaseLength, int Popular, double PopularShare, int Seed,
    int RowsPerPhase, long TrainSkip, long TrainPool, OnlineCacheOptions Update, EarlyExitEngineOptions Engine, string? Output);

/// <summary>
/// <c>gati bench phase-ceiling</c>: what an update of the caches could buy on each phase of the phased stream at most,
/// with far more of the phase's rows than the phase itself yields. For each phase, <see cref="PhaseCeilingSettings.RowsPerPhase"/>
/// rows of the training split drawn with the phase's class mix (by default rows the offline caches were not fitted or chosen on)
/// become window rows exactly as the shadow worker makes them; the updater's own <c>CacheUpdater.Train</c> builds and
/// calibrates a candidate on them, and the candidate and the static caches serve the phase's requests of the test
/// split in simulation (the updater's validation: each row exits at the first cache whose P(hit) reaches its
/// threshold, priced by the measured per-segment costs). A control candidate trained the same way on uniform rows
/// tells specialisation apart from having more rows.
/// </summary>
internal sealed class PhaseCeilingBenchmark(IAnsiConsole console)
{
    public int Run(PhaseCeilingSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var context = DeviceContext.Create("cpu");
        var model = context.Gati().LoadModel(settings.Model, out _);
        try
        {
            var parts = LoadedModel.Parts(model, settings.Model);
            var caches = parts.Caches ?? throw new InvalidOperationException($"{settings.Model} holds no learned caches: choose them with gati optimize.");
            var size = parts.BaseModel.InputShape.Size;
            var (testImages, testLabels) = EarlyExitEvaluation.Load(parts.Inputs(settings.Dataset.Load(context, DatasetSplit.Test, settings.Rows)), parts.ImageColumnName, size);
            var trainSplit = settings.Dataset.Load(context, DatasetSplit.Train);
            var (trainImages, trainLabels) = EarlyExitEvaluation.Load(
                parts.Inputs(context.Data.TakeRows(context.Data.SkipRows(trainSplit, settings.TrainSkip), settings.TrainPool)), parts.ImageColumnName, size);
            if (trainLabels.Length == 0)
                throw new ArgumentException($"The training split has no rows after the first {settings.TrainSkip} (--train-skip).");
            var workload = Workloads.Phased(testLabels, settings.Requests, settings.PhaseLength, settings.Popular, settings.PopularShare, seed: settings.Seed);
            console.MarkupLineInterpolated($"{workload.PopularClasses.Count} phases of the phased stream; {settings.RowsPerPhase} training-split rows per phase (from a pool of {trainLabels.Length} after the first {settings.TrainSkip})...");

            using var engine = EarlyExitEngine.Create(caches.BaseModel, caches.Caches, settings.Engine);
            using var served = caches.WithCaches(caches.Caches);
            // Every row sampled, nothing reacted to, nothing updated in the background: the sampler only makes window rows.
            var collect = settings.Update.Clone();
            collect.SampleFraction = 1;
            collect.Updates = false;
            collect.CaptureFullRuns = false;
            collect.ReactOn = ReactionTrigger.UpperBound;
            collect.MinimumExits = int.MaxValue;
            collect.WindowMegabytes = Math.Max(collect.WindowMegabytes, 2048);
            using var online = new OnlineCaches(served, engine, settings.Engine, collect, (_, _) => throw new InvalidOperationException("The ceiling benchmark never swaps caches."));
            var segmentMs = online.SegmentMs;
            var thresholds = engine.Thresholds.ToArray();

            ShadowRow[] WindowRows(float[] images, IReadOnlyList<int> rows, string what)
            {
                var before = online.Sampler.Window.Snapshot().LastOrDefault()?.Sequence ?? 0;
                const int Batch = 16;
                var input = new float[Batch * size];
                for (var start = 0; start < rows.Count; start += Batch)
                {
                    var n = Math.Min(Batch, rows.Count - start);
                    for (var i = 0; i < n; i++) images.AsSpan(rows[start + i] * size, size).CopyTo(input.AsSpan(i * size, size));
                    engine.Run(input.AsSpan(0, n * size).ToArray(), n);
                    // The sampler's queues are bounded (a full one drops rows): let the worker catch up now and then.
                    if ((start / Batch) % 16 == 15 && !online.Sampler.WaitForPending(TimeSpan.FromMinutes(10)))
                        throw new TimeoutException($"The shadow worker did not complete the {what} rows within 10 minutes.");
                }
                if (!online.Sampler.WaitForPending(TimeSpan.FromMinutes(10))) throw new TimeoutException($"The shadow worker did not complete the {what} rows within 10 minutes.");
                var made = online.Sampler.Window.Since(before).Where(CacheUpdater.Complete).ToArray();
                if (made.Length != rows.Count)
                    throw new InvalidOperationException($"{what}: {rows.Count} rows served, {made.Length} complete window rows ({online.Sampler.Dropped} dropped, {online.Sampler.Failed} failed: {online.Sampler.LastFailure}).");
                return made;
            }

            UpdateCandidate Candidate(ShadowRow[] rows)
            {
                var options = settings.Update.Clone();
                options.UpdateRows = rows.Length;
                var candidate = CacheUpdater.Train(served.Caches, rows, options, segmentMs, new CpuThrottle(1), CancellationToken.None);
                return candidate ?? throw new InvalidOperationException($"{rows.Length} rows are too few for an update ({CacheUpdater.MinimumRows} needed).");
            }

            var phases = new List<(int[] Popular, SimulatedServing Static, SimulatedServing Specialised, SimulatedServing Control, string Summary)>();
            console.MarkupLine("uniform training rows (the control)...");
            var control = Candidate(WindowRows(trainImages, Workloads.Uniform(trainLabels, settings.RowsPerPhase, settings.Seed + 999).Rows, "uniform training"));
            try
            {
                for (var p = 0; p < workload.PopularClasses.Count; p++)
                {
                    var popular = workload.PopularClasses[p];
                    console.MarkupLineInterpolated($"phase {p + 1} (popular classes {string.Join(", ", popular)}): training rows, requests, candidate...");
                    var train = WindowRows(trainImages, Workloads.Phase(trainLabels, settings.RowsPerPhase, popular, settings.PopularShare, seed: settings.Seed + 1000 + p).Rows,
                        $"phase {p + 1} training");
                    var requests = WindowRows(testImages, workload.Rows.Where((_, i) => workload.Phases[i] == p).ToArray(), $"phase {p + 1} request");
                    var candidate = Candidate(train);
                    try
                    {
                        var confidence = settings.Update.Confidence;
                        phases.Add((popular, CacheUpdater.Simulate(served.Caches, thresholds, requests, segmentMs, confidence),
                            CacheUpdater.Simulate(candidate.Caches, candidate.Caches.Select(c => c.Calibration.Threshold).ToArray(), requests, segmentMs, confidence),
                            CacheUpdater.Simulate(control.Caches, control.Caches.Select(c => c.Calibration.Threshold).ToArray(), requests, segmentMs, confidence),
                            candidate.Summary));
                    }
                    finally
                    {
                        foreach (var cache in candidate.Caches) cache.Dispose();
                    }
                }
                var report = Report(settings, parts.Description, caches, workload, segmentMs, phases, control.Summary);
                report.AppendLine(CultureInfo.InvariantCulture, $"Engine: {engine.BackendDescription}. Wall time {clock.Elapsed.TotalSeconds:F0} s.");
                if (settings.Output is { } output) AtomicFile.WriteAllText(output, report.ToString());
                console.WriteLine(report.ToString());
                return 0;
            }
            finally
            {
                foreach (var cache in control.Caches) cache.Dispose();
            }
        }
        finally
        {
            LoadedModel.Dispose(model);
        }
    }

    private static StringBuilder Report(PhaseCeilingSettings settings, string description, LearnedCachesTransformer caches, Workload workload, double[] segmentMs,
        List<(int[] Popular, SimulatedServing Static, SimulatedServing Specialised, SimulatedServing Control, string Summary)> phases, string controlSummary)
    {
        var u = settings.Update;
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture,
            $"Model: {Path.GetFileName(settings.Model)} ({description}), caches on layers {string.Join(", ", caches.Caches.Select(c => c.Layer))}. Phased stream: {settings.Requests} requests over the test split, phases of {settings.PhaseLength}, {settings.Popular} popular classes taking {settings.PopularShare:P0} (seed {settings.Seed}), as `gati bench workload` draws it.");
        md.AppendLine(CultureInfo.InvariantCulture,
            $"Per phase, a candidate from the updater's own recipe on {settings.RowsPerPhase} rows of the training split drawn with the phase's class mix (after its first {settings.TrainSkip} rows): every other row calibrates (target {u.AgreementTarget:P1} at {u.Confidence:P0} confidence, exact bound), the rest fine-tune ({u.Epochs} epochs at {u.LearningRate}, class-prior correction on the newest {u.ClassPriorRows}). The control candidate is made the same way from {settings.RowsPerPhase} uniform rows. All serve the phase's requests in simulation, priced by the measured segment costs ({string.Join(" + ", segmentMs.Select(m => m.ToString("F2", CultureInfo.InvariantCulture)))} ms).");
        md.AppendLine();
        md.AppendLine("| phase | popular classes | requests | static ms | static agreement | static exit early | specialised ms | specialised agreement | specialised exit early | static / specialised | control ms | control agreement | static / control |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        double Early(SimulatedServing s) => 1 - s.ExitShare[^1];
        for (var p = 0; p < phases.Count; p++)
        {
            var (popular, fixedCaches, specialised, control, _) = phases[p];
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {p + 1} | {string.Join(", ", popular)} | {fixedCaches.Rows} | {fixedCaches.ExpectedMs:F2} | {fixedCaches.Agreement:P2} | {Early(fixedCaches):P1} | {specialised.ExpectedMs:F2} | {specialised.Agreement:P2} | {Early(specialised):P1} | {fixedCaches.ExpectedMs / specialised.ExpectedMs:F2}x | {control.ExpectedMs:F2} | {control.Agreement:P2} | {fixedCaches.ExpectedMs / control.ExpectedMs:F2}x |");
        }
        int total = phases.Sum(p => p.Static.Rows);
        double Weighted(Func<(int[] Popular, SimulatedServing Static, SimulatedServing Specialised, SimulatedServing Control, string Summary), SimulatedServing> pick, Func<SimulatedServing, double> of) =>
            phases.Sum(p => of(pick(p)) * p.Static.Rows) / Math.Max(1, total);
        var staticMs = Weighted(p => p.Static, s => s.ExpectedMs);
        var specialisedMs = Weighted(p => p.Specialised, s => s.ExpectedMs);
        var controlMs = Weighted(p => p.Control, s => s.ExpectedMs);
        md.AppendLine(CultureInfo.InvariantCulture,
            $"| **whole stream** | all | {total} | {staticMs:F2} | {Weighted(p => p.Static, s => s.Agreement):P2} | {Weighted(p => p.Static, Early):P1} | {specialisedMs:F2} | {Weighted(p => p.Specialised, s => s.Agreement):P2} | {Weighted(p => p.Specialised, Early):P1} | {staticMs / specialisedMs:F2}x | {controlMs:F2} | {Weighted(p => p.Control, s => s.Agreement):P2} | {staticMs / controlMs:F2}x |");
        md.AppendLine();
        md.AppendLine("Candidates (each cache's chosen predictor, its agreement on the calibration rows, threshold and exits there):");
        for (var p = 0; p < phases.Count; p++) md.AppendLine(CultureInfo.InvariantCulture, $"- phase {p + 1}: {phases[p].Summary}");
        md.AppendLine(CultureInfo.InvariantCulture, $"- control (uniform rows): {controlSummary}");
        md.AppendLine();
        return md;
    }
}
