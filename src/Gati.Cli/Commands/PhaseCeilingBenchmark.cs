using Gati.MLNet.Online;

namespace Gati.Cli.Commands;

internal sealed record PhaseCeilingSettings(string Model, DatasetSpec Dataset, string Stream, long? Rows, int Requests, int PhaseLength, int Popular, double PopularShare,
    int Seed, int RowsPerPhase, long TrainSkip, long TrainPool, OnlineCacheOptions Update, EarlyExitEngineOptions Engine, string? Output, double DriftContrast = 0.5,
    double DriftNoise = 0.05);

/// <summary>
/// <c>gati bench phase-ceiling</c>: what an update of the caches could buy on each phase of a workload stream at most,
/// with far more of the phase's rows than the phase itself yields. For each phase, <see cref="PhaseCeilingSettings.RowsPerPhase"/>
/// rows of the training split drawn as the phase draws its requests (the phased stream's class mix, or the drift
/// stream's camera; by default rows the offline caches were not fitted or chosen on) become window rows exactly as the
/// shadow worker makes them. On them the updater's own recipe builds and calibrates a candidate
/// (<c>CacheUpdater.Train</c>), and the same calibration sets the serving caches' thresholds alone
/// (<c>CacheUpdater.Recalibrate</c>: the most a reaction could do). These, the static caches, and a control candidate
/// made from uniform rows of the original camera, serve the phase's requests of the test split in simulation: each row
/// exits at the first cache whose P(hit) reaches its threshold, priced by the measured per-segment costs (the
/// updater's validation).
/// </summary>
internal sealed class PhaseCeilingBenchmark(IAnsiConsole console)
{
    private sealed record Phase(string Name, int Requests, SimulatedServing Static, SimulatedServing Recalibrated, SimulatedServing Specialised, SimulatedServing Control,
        string Summary);

    public int Run(PhaseCeilingSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var context = DeviceContext.Create("cpu");
        var model = context.Gati().LoadModel(settings.Model, out _);
        try
        {
            var (parts, caches, size) = WorkloadBenchmark.CachesOf(model, settings.Model);
            var testInputs = parts.Inputs(settings.Dataset.Load(context, DatasetSplit.Test, settings.Rows));
            var (testImages, testLabels) = EarlyExitEvaluation.Load(testInputs, parts.ImageColumnName, size);
            var trainInputs = parts.Inputs(context.Data.TakeRows(context.Data.SkipRows(settings.Dataset.Load(context, DatasetSplit.Train), settings.TrainSkip), settings.TrainPool));
            var (trainImages, trainLabels) = EarlyExitEvaluation.Load(trainInputs, parts.ImageColumnName, size);
            if (trainLabels.Length == 0)
                throw new ArgumentException($"The training split has no rows after the first {settings.TrainSkip} (--train-skip).");
            var drift = settings.Stream == "drift";
            CameraShift? shift = null;
            if (drift)
            {
                // As the workload benchmark: row labels.Length + r is row r through the changed camera (the training rows' noise seeded apart).
                (testImages, shift) = WorkloadBenchmark.WithChangedCamera(testInputs, parts.ImageColumnName, testImages, testLabels.Length, size, settings.DriftContrast,
                    settings.DriftNoise, settings.Seed);
                (trainImages, _) = WorkloadBenchmark.WithChangedCamera(trainInputs, parts.ImageColumnName, trainImages, trainLabels.Length, size, settings.DriftContrast,
                    settings.DriftNoise, settings.Seed + 1);
            }
            var workload = drift
                ? Workloads.Drift(testLabels, settings.Requests, settings.Seed)
                : Workloads.Phased(testLabels, settings.Requests, settings.PhaseLength, settings.Popular, settings.PopularShare, seed: settings.Seed);
            console.MarkupLineInterpolated($"{workload.PopularClasses.Count} phases of the {settings.Stream} stream; {settings.RowsPerPhase} training-split rows per phase (from {trainLabels.Length} after the first {settings.TrainSkip})...");

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
            var options = settings.Update.Clone();
            options.UpdateRows = settings.RowsPerPhase;
            // Every row here is sampled, so every other one calibrates.
            if (settings.RowsPerPhase < 2L * CacheUpdater.CalibrationRowsNeeded(options))
                throw new ArgumentException($"--rows-per-phase {settings.RowsPerPhase} is too few: {OnlineCaches.NotEnoughRows(options)}.");

            ShadowRow[] WindowRows(float[] images, IReadOnlyList<int> rows, string what)
            {
                // Every row served before is complete (the worker caught up on them): the new ones come after the newest.
                var before = online.Sampler.Window.Snapshot().Select(r => r.Sequence).DefaultIfEmpty(0).Max();
                const int Batch = 16;
                for (var start = 0; start < rows.Count; start += Batch)
                {
                    var n = Math.Min(Batch, rows.Count - start);
                    var input = new float[n * size];
                    for (var i = 0; i < n; i++) images.AsSpan(rows[start + i] * size, size).CopyTo(input.AsSpan(i * size, size));
                    engine.Run(input, n);
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

            UpdateCandidate Candidate(ShadowRow[] rows) =>
                CacheUpdater.Train(served.Caches, rows, options, segmentMs, new CpuThrottle(1), CancellationToken.None)
                ?? throw new InvalidOperationException($"{rows.Length} rows: {OnlineCaches.NotEnoughRows(options)}.");

            SimulatedServing Serve(UpdateCandidate candidate, ShadowRow[] requests) =>
                CacheUpdater.Simulate(candidate.Caches, candidate.Caches.Select(c => c.Calibration.Threshold).ToArray(), requests, segmentMs, options.Confidence);

            var phases = new List<Phase>();
            console.MarkupLine("uniform training rows (the control)...");
            var control = Candidate(WindowRows(trainImages, Workloads.Uniform(trainLabels, settings.RowsPerPhase, settings.Seed + 999).Rows, "uniform training"));
            try
            {
                for (var p = 0; p < workload.PopularClasses.Count; p++)
                {
                    var name = workload.PhaseNames?[p] ?? string.Join(", ", workload.PopularClasses[p]);
                    console.MarkupLineInterpolated($"phase {p + 1} ({name}): training rows, requests, candidate...");
                    var trainRows = drift
                        ? Workloads.Uniform(trainLabels, settings.RowsPerPhase, settings.Seed + 1000 + p).Rows.Select(r => r + p * trainLabels.Length).ToArray()
                        : Workloads.Phase(trainLabels, settings.RowsPerPhase, workload.PopularClasses[p], settings.PopularShare, seed: settings.Seed + 1000 + p).Rows;
                    var train = WindowRows(trainImages, trainRows, $"phase {p + 1} training");
                    var requests = WindowRows(testImages, workload.Rows.Where((_, i) => workload.Phases[i] == p).ToArray(), $"phase {p + 1} request");
                    var recalibrated = CacheUpdater.Recalibrate(served.Caches, train, options, segmentMs)
                        ?? throw new InvalidOperationException($"{train.Length} rows: {OnlineCaches.NotEnoughRows(options)}.");
                    var candidate = Candidate(train);
                    try
                    {
                        phases.Add(new Phase(name, requests.Length, CacheUpdater.Simulate(served.Caches, thresholds, requests, segmentMs, options.Confidence),
                            CacheUpdater.Simulate(served.Caches, recalibrated.Select(c => c.Threshold).ToArray(), requests, segmentMs, options.Confidence),
                            Serve(candidate, requests), Serve(control, requests), candidate.Summary));
                    }
                    finally
                    {
                        foreach (var cache in candidate.Caches) cache.Dispose();
                    }
                }
                var report = Report(settings, parts.Description, caches, shift, segmentMs, phases, control.Summary);
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

    private static StringBuilder Report(PhaseCeilingSettings settings, string description, LearnedCachesTransformer caches, CameraShift? shift, double[] segmentMs,
        List<Phase> phases, string controlSummary)
    {
        var u = settings.Update;
        var md = new StringBuilder();
        var stream = shift is null
            ? string.Create(CultureInfo.InvariantCulture, $"Phased stream: {settings.Requests} requests over the test split, phases of {settings.PhaseLength}, {settings.Popular} popular classes taking {settings.PopularShare:P0} (seed {settings.Seed}), as `gati bench workload` draws it.")
            : string.Create(CultureInfo.InvariantCulture, $"Drift stream: {settings.Requests} requests over the test split, the second half through a changed camera (contrast x{shift.Contrast:0.##}, sensor noise sigma {shift.Noise:P0} of the pixel range; seed {settings.Seed}), as `gati bench workload` draws it.");
        md.AppendLine(CultureInfo.InvariantCulture, $"Model: {Path.GetFileName(settings.Model)} ({description}), caches on layers {string.Join(", ", caches.Caches.Select(c => c.Layer))}. {stream}");
        md.AppendLine(CultureInfo.InvariantCulture,
            $"Per phase, {settings.RowsPerPhase} rows of the training split drawn as the phase draws its requests (after the split's first {settings.TrainSkip} rows), made into window rows: every other row calibrates (target {u.AgreementTarget:P1} at {u.Confidence:P0} confidence, exact bound), the rest fine-tune ({u.Epochs} epochs at {u.LearningRate}, class-prior correction on the newest {u.ClassPriorRows}). *Recalibrated*: the static caches with thresholds from that calibration alone (the most a reaction could do). *Specialised*: the updater's candidate. *Control*: a candidate made the same way from {settings.RowsPerPhase} uniform rows of the original camera. All serve the phase's requests in simulation, priced by the measured segment costs ({string.Join(" + ", segmentMs.Select(m => m.ToString("F2", CultureInfo.InvariantCulture)))} ms).");
        md.AppendLine();
        md.AppendLine("| phase | requests | static ms | static agreement | recalibrated ms | recalibrated agreement | specialised ms | specialised agreement | specialised exit early | static / specialised | recalibrated / specialised | control ms | control agreement |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        static double Early(SimulatedServing s) => 1 - s.ExitShare[^1];
        string Row(string phase, int requests, Func<Func<Phase, SimulatedServing>, Func<SimulatedServing, double>, double> of)
        {
            var (fixedMs, recalibratedMs, specialisedMs) = (of(p => p.Static, s => s.ExpectedMs), of(p => p.Recalibrated, s => s.ExpectedMs), of(p => p.Specialised, s => s.ExpectedMs));
            return string.Create(CultureInfo.InvariantCulture,
                $"| {phase} | {requests} | {fixedMs:F2} | {of(p => p.Static, s => s.Agreement):P2} | {recalibratedMs:F2} | {of(p => p.Recalibrated, s => s.Agreement):P2} | {specialisedMs:F2} | {of(p => p.Specialised, s => s.Agreement):P2} | {of(p => p.Specialised, Early):P1} | {fixedMs / specialisedMs:F2}x | {recalibratedMs / specialisedMs:F2}x | {of(p => p.Control, s => s.ExpectedMs):F2} | {of(p => p.Control, s => s.Agreement):P2} |");
        }
        for (var i = 0; i < phases.Count; i++)
        {
            var phase = phases[i];
            var line = Row(string.Create(CultureInfo.InvariantCulture, $"{i + 1} ({phase.Name})"), phase.Requests, (pick, value) => value(pick(phase)));
            md.AppendLine(line);
        }
        var total = phases.Sum(p => p.Requests);
        var whole = Row("**whole stream**", total, (pick, value) => phases.Sum(p => value(pick(p)) * p.Requests) / Math.Max(1, total));
        md.AppendLine(whole);
        md.AppendLine();
        md.AppendLine("Candidates (each cache's chosen predictor, its agreement on the calibration rows, threshold and exits there):");
        for (var p = 0; p < phases.Count; p++) md.AppendLine(CultureInfo.InvariantCulture, $"- phase {p + 1}: {phases[p].Summary}");
        md.AppendLine(CultureInfo.InvariantCulture, $"- control (uniform rows): {controlSummary}");
        md.AppendLine();
        return md;
    }
}
