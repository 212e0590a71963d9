using Gati.MLNet.Online;

namespace Gati.Cli.Commands;

internal sealed record WorkloadBenchmarkSettings(string Model, DatasetSpec Dataset, string[] Streams, int Requests, int PhaseLength, int Popular,
    double PopularShare, int Seed, OnlineCacheOptions Online, string? Output, double Rate, EarlyExitEngineOptions Engine, long? Rows = null, double DriftContrast = 0.5,
    double DriftNoise = 0.05);

/// <summary>
/// <c>gati bench workload</c>: replays request streams (phased temporal locality, and uniform) one request at a time
/// through the same caches served statically and served with online updates (shadow sampling, live reactions and
/// the background updater, whose CPU time competes with serving on the same cores), and reports per phase the mean
/// and p99 latency, the exit mix, agreement with the base model on every request (computed offline, not from the
/// sample), and the updates made.
/// </summary>
internal sealed partial class WorkloadBenchmark(IAnsiConsole console)
{
    /// <summary>One request as served; <paramref name="Drawn"/>: online caches drew it to keep a row before the call.</summary>
    private sealed record Served(double Ms, int ExitLayer, int Class, bool Drawn = false);

    public int Run(WorkloadBenchmarkSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var context = DeviceContext.Create("cpu");
        var model = context.Gati().LoadModel(settings.Model, out _);
        try
        {
            var (parts, caches, size) = CachesOf(model, settings.Model);
            var inputs = parts.Inputs(settings.Dataset.Load(context, DatasetSplit.Test, settings.Rows));
            var (images, labels) = EarlyExitEvaluation.Load(inputs, parts.ImageColumnName, size);
            var options = settings.Engine;
            CameraShift? shift = null;
            if (settings.Streams.Contains("drift"))
                (images, shift) = WithChangedCamera(inputs, parts.ImageColumnName, images, labels.Length, size, settings.DriftContrast, settings.DriftNoise, settings.Seed);
            var baseClass = BaseAnswers(parts.BaseModel, options, images, images.Length / size, size);

            var report = new StringBuilder();
            report.AppendLine(CultureInfo.InvariantCulture,
                $"Model: {Path.GetFileName(settings.Model)} ({parts.Description}), caches on layers {string.Join(", ", caches.Caches.Select(c => c.Layer))}; {labels.Length} test images; ONNX Runtime on the CPU, one request at a time, {settings.Rate:F0} requests/s.");
            report.AppendLine(CultureInfo.InvariantCulture,
                $"Online: sample {settings.Online.SampleFraction:P0} of requests{(settings.Online.Updates ? settings.Online.FullRunFraction >= 1 ? " (+ every full run, as training rows)" : $" (+ {settings.Online.FullRunFraction:P0} of full runs, as training rows)" : "")}, window {settings.Online.WindowMegabytes:F0} MB, target {settings.Online.AgreementTarget:P1} at {settings.Online.Confidence:P0} confidence ({settings.Online.ReactOn switch
                {
                    ReactionTrigger.UpperBound => "reacting when the upper bound falls below it",
                    ReactionTrigger.LowerBound => "reacting when the lower bound falls below it",
                    _ => "reacting when the upper bound falls below it, or the estimate after the lower bound had shown it kept",
                }}{(settings.Online.WatchExitMix ? "; the requests since a change of the exit mix judged apart" : "")}), {(settings.Online.Updates ? $"update every {settings.Online.UpdateEveryRows} labelled rows on the last {settings.Online.UpdateRows} (class-prior correction on the newest {settings.Online.ClassPriorRows} sampled training rows, fine-tuning {settings.Online.Epochs} epochs at {settings.Online.LearningRate}), validation on {settings.Online.ValidationRows} fresh rows, updater CPU budget {settings.Online.CpuBudget:P0} of a core" : "no updates (watch and react only)")}.");
            if (shift is not null)
                report.AppendLine(CultureInfo.InvariantCulture,
                    $"Drift: the second half of the drift stream comes through a changed camera: contrast x{shift.Contrast:0.##} about each image's mean, sensor noise sigma {shift.Noise:P0} of the pixel range (0-{shift.Range:0}), seeded; the base model's answer on the shifted image is the reference.");
            report.AppendLine();
            foreach (var stream in settings.Streams)
            {
                var workload = stream switch
                {
                    "uniform" => Workloads.Uniform(labels, settings.Requests, settings.Seed),
                    "drift" => Workloads.Drift(labels, settings.Requests, settings.Seed),
                    _ => Workloads.Phased(labels, settings.Requests, settings.PhaseLength, settings.Popular, settings.PopularShare, seed: settings.Seed),
                };
                // On the drift stream a third replay, online caches that only watch and react, shows what updates add.
                var reactionsOnly = stream == "drift" && settings.Online.Updates;
                console.MarkupLineInterpolated($"[bold]{stream}[/] stream: {workload.Count} requests in {workload.PopularClasses.Count} phase(s), static and online caches{(reactionsOnly ? " (with and without updates)" : "")} in turns of {Turn}...");
                // The replays take turns of Turn requests (which goes first rotates), so that all see the same machine: on
                // a shared VM, replays a few minutes apart differed by up to 40 % with the same exits. While one serves,
                // the others' shadow workers and updaters are paused, so what they cost falls on their own requests.
                using var fixedReplay = new Replayer(caches, options, null, workload, images, size, console);
                using var onlineReplay = new Replayer(caches, options, settings.Online, workload, images, size, console);
                using var watchReplay = reactionsOnly ? new Replayer(caches, options, WithoutUpdates(settings.Online), workload, images, size, console) : null;
                Replayer[] replays = watchReplay is null ? [fixedReplay, onlineReplay] : [fixedReplay, onlineReplay, watchReplay];
                foreach (var replay in replays) replay.Pause();
                for (var (from, turn) = (0, 0); from < workload.Count; from += Turn, turn++)
                {
                    var to = Math.Min(from + Turn, workload.Count);
                    for (var k = 0; k < replays.Length; k++)
                    {
                        var replay = replays[(turn + k) % replays.Length];
                        replay.Resume();
                        replay.Serve(from, to, settings.Rate);
                        replay.Pause();
                    }
                }
                report.Append(Table(stream, workload, fixedReplay.Answers, onlineReplay.Answers, onlineReplay.Summary()!, baseClass));
                report.AppendLine(CultureInfo.InvariantCulture, $"Every replay's engine: {fixedReplay.EngineDescription}.");
                report.AppendLine();
                if (stream == "drift") report.Append(DriftWindows(workload, baseClass, fixedReplay, onlineReplay, watchReplay));
                if (settings.Output is { } reportPath)
                {
                    var plotted = new List<WorkloadActivityPlot.Replay> { fixedReplay.ForPlot("static", baseClass), onlineReplay.ForPlot("online", baseClass) };
                    if (watchReplay is not null) plotted.Add(watchReplay.ForPlot("online, reactions only", baseClass));
                    var plotPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(reportPath))!, $"{Path.GetFileNameWithoutExtension(reportPath)}-{stream}.png");
                    report.AppendLine(WorkloadActivityPlot.Write(plotPath, $"{Path.GetFileName(settings.Model)}: {stream} stream", plotted, workload.Phases));
                    report.AppendLine();
                }
                report.AppendLine(CultureInfo.InvariantCulture,
                    $"Garbage collection during each replay's turns (whole process): static {fixedReplay.Gc}; online {onlineReplay.Gc}{(watchReplay is null ? "" : $"; online, reactions only {watchReplay.Gc}")}.");
                report.AppendLine();
            }
            report.AppendLine(CultureInfo.InvariantCulture, $"Wall time {clock.Elapsed.TotalSeconds:F0} s.");
            if (settings.Output is { } output) AtomicFile.WriteAllText(output, report.ToString());
            console.WriteLine(report.ToString());
            return 0;
        }
        finally
        {
            LoadedModel.Dispose(model);
        }
    }

    private static OnlineCacheOptions WithoutUpdates(OnlineCacheOptions online)
    {
        var watch = online.Clone();
        watch.Updates = false;
        return watch;
    }

    /// <summary>A model file's parts, its learned caches (an error naming the file when it has none) and its input size.</summary>
    internal static (EarlyExitModel Parts, LearnedCachesTransformer Caches, int Size) CachesOf(ITransformer model, string path)
    {
        var parts = LoadedModel.Parts(model, path);
        var caches = parts.Caches ?? throw new InvalidOperationException($"{path} holds no learned caches: choose them with gati optimize.");
        return (parts, caches, parts.BaseModel.InputShape.Size);
    }

    /// <summary>
    /// The drift stream's images: the originals followed by their shifted copies (row rows + r is row r through the
    /// changed camera), and the camera. Gati's dataset readers give normalised images (the column says how); pipelines'
    /// pixels are raw, and the noise is then a share of their range.
    /// </summary>
    internal static (float[] Images, CameraShift Shift) WithChangedCamera(IDataView inputs, string imageColumn, float[] images, int rows, int size, double contrast,
        double noise, int seed)
    {
        var normalization = Annotations.TryGetNormalization(inputs.Schema[imageColumn]);
        var shift = new CameraShift(contrast, noise, normalization is null ? CameraShift.RangeOf(images) : 1);
        return (WithShiftedCopies(images, rows, size, shift, normalization, seed), shift);
    }

    /// <summary>The images followed by a copy of each through the changed camera (image r's noise seeded by seed and r, the same in every run).</summary>
    private static float[] WithShiftedCopies(float[] images, int rows, int size, CameraShift shift, ChannelNormalization? normalization, int seed)
    {
        var both = GC.AllocateUninitializedArray<float>(checked(2 * rows * size));
        images.AsSpan(0, rows * size).CopyTo(both);
        Parallel.For(0, rows, r => shift.Apply(images.AsSpan(r * size, size), both.AsSpan((rows + r) * size, size), unchecked(seed * 1_000_003 + r), normalization));
        return both;
    }

    private static int[] BaseAnswers(BaseModel baseModel, EarlyExitEngineOptions options, float[] images, int rows, int size)
    {
        using var full = EarlyExitEngine.Create(baseModel, [], options);
        var answers = new int[rows];
        var batch = new float[64 * size];
        for (var start = 0; start < rows; start += 64)
        {
            var n = Math.Min(64, rows - start);
            images.AsSpan(start * size, n * size).CopyTo(batch);
            var result = full.Run(batch, n);
            for (var i = 0; i < n; i++) answers[start + i] = result.PredictedClass[i];
        }
        return answers;
    }

    /// <summary>
    /// Agreement with the base model over consecutive windows of <see cref="DriftWindow"/> requests of the shifted half,
    /// per replay, and the shifted half's mean latency (the drift stream's promise is judged on every window after the
    /// first).
    /// </summary>
    private static string DriftWindows(Workload workload, int[] baseClass, Replayer fixedReplay, Replayer online, Replayer? watchOnly)
    {
        var shifted = Enumerable.Range(0, workload.Count).Where(i => workload.Phases[i] == 1).ToArray();
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"Shifted half, agreement with the base model per window of {DriftWindow} requests, and mean latency:");
        md.AppendLine();
        var replays = new List<(string Name, Served[] Answers)> { ("static", fixedReplay.Answers), ("online", online.Answers) };
        if (watchOnly is not null) replays.Add(("online, reactions only", watchOnly.Answers));
        var windows = (shifted.Length + DriftWindow - 1) / DriftWindow;
        md.AppendLine("| caches | " + string.Join(" | ", Enumerable.Range(0, windows).Select(w => $"window {w + 1}")) + " | lowest after the first | mean ms (shifted half) | exit early |");
        md.AppendLine("|---|" + string.Concat(Enumerable.Repeat("---|", windows)) + "---|---|---|");
        foreach (var (name, answers) in replays)
        {
            var agreements = Enumerable.Range(0, windows).Select(w =>
            {
                var rows = shifted.Skip(w * DriftWindow).Take(DriftWindow).ToArray();
                return rows.Count(i => answers[i].Class == baseClass[workload.Rows[i]]) / (double)rows.Length;
            }).ToArray();
            var lowest = windows > 1 ? agreements.Skip(1).Min().ToString("P2", CultureInfo.InvariantCulture) : "-";
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {name} | {string.Join(" | ", agreements.Select(a => a.ToString("P2", CultureInfo.InvariantCulture)))} | {lowest} | {shifted.Average(i => answers[i].Ms):F3} | {shifted.Count(i => answers[i].ExitLayer > 0) / (double)shifted.Length:P1} |");
        }
        md.AppendLine();
        if (watchOnly is not null)
        {
            var watch = watchOnly.Summary()!;
            md.AppendLine(CultureInfo.InvariantCulture, $"Online, reactions only: {watch}.");
            AppendEvents(md, watch);
            md.AppendLine();
        }
        return md.ToString();
    }

    /// <summary>Requests per window over which the drift stream's agreement is judged.</summary>
    private const int DriftWindow = 2000;

    /// <summary>Requests each replay serves before the other takes its turn.</summary>
    private const int Turn = 1000;

    private sealed record OnlineSummary((int Request, UpdateOutcome Outcome)[] Updates, IReadOnlyDictionary<int, int> Starts, ThresholdReaction[] Reactions, (int Request, TrafficChange Change)[] Changes,
        double CpuSeconds, long Dropped, long FullRunsSkipped, long Labelled, long Failed, string? LastFailure, LiveAgreementSnapshot Live, double WorkerSeconds,
        string ActivationSource, bool StepAside, double SteppedAsideSeconds, long StepAsideTimeouts)
    {
        public override string ToString() => string.Create(CultureInfo.InvariantCulture,
            $"{Reactions.Length} threshold reactions; {Changes.Length} changes of traffic seen in the exit mix; {Labelled} shadow rows labelled ({WorkerSeconds:F1} s of the shadow worker's time{(StepAside ? ", its waits included" : "")}; activations {ActivationSource}), {(StepAside ? $"background work waited {SteppedAsideSeconds:F1} s for requests in flight ({StepAsideTimeouts} waits cut short at 50 ms), " : "")} {Dropped} dropped under load, {FullRunsSkipped} full runs left out, {Failed} failed{(LastFailure is null ? "" : $" (last: {LastFailure})")}; live agreement at the end {Live.Estimate:P2} over {Live.Requests} sampled requests (exact {Live.Confidence:P0} bounds {Live.Lower:P2}-{Live.Upper:P2})");
    }

    /// <summary>
    /// Mean latency and share per exit, static and online, over the whole stream; and the online mean had each exit cost
    /// what it cost static: the part of the difference due to where requests exit, apart from what serving next to the
    /// shadow worker and the updater costs each exit.
    /// </summary>
    private static string ExitBreakdown(Served[] fixedCaches, Served[] updated)
    {
        var exits = fixedCaches.Concat(updated).Select(s => s.ExitLayer).Distinct().Order().ToArray();
        // Static's mean latency at each exit (NaN at an exit it never took).
        var atExit = exits.ToDictionary(e => e, e => fixedCaches.Where(s => s.ExitLayer == e).Select(s => s.Ms).DefaultIfEmpty(double.NaN).Average());
        var parts = new List<string>();
        double mixOnly = 0;
        foreach (var exit in exits)
        {
            var atStatic = fixedCaches.Count(s => s.ExitLayer == exit);
            var atOnline = updated.Where(s => s.ExitLayer == exit).ToArray();
            var staticMs = atExit[exit];
            var onlineMs = atOnline.Length == 0 ? double.NaN : atOnline.Average(s => s.Ms);
            // An exit static never took is costed at online's own figure.
            mixOnly += atOnline.Length * (atStatic == 0 ? onlineMs : staticMs);
            parts.Add(string.Create(CultureInfo.InvariantCulture,
                $"{(exit == 0 ? "whole network" : $"layer {exit}")} {staticMs:F3} / {onlineMs:F3} ms ({atStatic / (double)fixedCaches.Length:P1} / {atOnline.Length / (double)updated.Length:P1})"));
        }
        mixOnly /= updated.Length;
        var staticMean = fixedCaches.Average(s => s.Ms);
        // Online requests against what static paid at the same exits: those drawn to keep a row (at batch 1 they may run
        // on the tapped single graph and copy activations), and the others, which only share the cores with background work.
        string Extra(bool drawn)
        {
            var group = updated.Where(s => s.Drawn == drawn && !double.IsNaN(atExit[s.ExitLayer])).ToArray();
            if (group.Length == 0) return drawn ? "no request was drawn to keep a row" : "every request was drawn to keep a row";
            var extra = group.Sum(s => s.Ms) / group.Sum(s => atExit[s.ExitLayer]) - 1;
            return string.Create(CultureInfo.InvariantCulture,
                $"{(drawn ? "requests drawn to keep a row" : "requests that kept none")} ({group.Length / (double)updated.Length:P1}) {extra:+0.0 %;-0.0 %}");
        }
        return string.Create(CultureInfo.InvariantCulture,
            $"By exit, static / online mean latency (share of requests): {string.Join("; ", parts)}. With static's cost per exit, online's exits would give " +
            $"{mixOnly:F3} ms ({staticMean / mixOnly:F2}x); the rest of the difference is what each exit cost more while the shadow worker and the updater ran. " +
            $"Against static's mean at the same exits, online {Extra(false)}; {Extra(true)}.");
    }

    private static string Table(string stream, Workload workload, Served[] fixedCaches, Served[] updated, OnlineSummary online, int[] baseClass)
    {
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"### {char.ToUpperInvariant(stream[0])}{stream[1..]} stream ({workload.Count} requests)");
        md.AppendLine();
        md.AppendLine("| phase | popular classes | requests | static mean ms | static p99 | online mean ms | online p99 | speedup (mean) | static agreement | online agreement | static exit early | online exit early | updates accepted / tried |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        var phases = workload.Phases.Max() + 1;
        for (var phase = 0; phase <= phases; phase++)
        {
            var all = phase == phases;
            var rows = Enumerable.Range(0, workload.Count).Where(i => all || workload.Phases[i] == phase).ToArray();
            if (rows.Length == 0) continue;
            double Mean(Served[] s) => rows.Average(i => s[i].Ms);
            double P99(Served[] s) => EarlyExitEvaluation.Percentile(rows.Select(i => s[i].Ms).ToArray(), 0.99);
            double Agreement(Served[] s) => rows.Count(i => s[i].Class == baseClass[workload.Rows[i]]) / (double)rows.Length;
            double Early(Served[] s) => rows.Count(i => s[i].ExitLayer > 0) / (double)rows.Length;
            var first = rows[0];
            var last = rows[^1];
            // Attempts that stopped for too few rows trained nothing: they are not counted as tried (the list below shows them).
            var updates = online.Updates.Where(u => !u.Outcome.TooFewRows && (all || (u.Request >= first && u.Request <= last))).ToArray();
            var popular = all ? "all" : workload.PhaseNames?[phase] ?? (workload.PopularClasses[phase].Length == 0 ? "none" : string.Join(", ", workload.PopularClasses[phase]));
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {(all ? "**whole stream**" : (phase + 1).ToString(CultureInfo.InvariantCulture))} | {popular} | {rows.Length} | {Mean(fixedCaches):F3} | {P99(fixedCaches):F3} | {Mean(updated):F3} | {P99(updated):F3} | {Mean(fixedCaches) / Mean(updated):F2}x | {Agreement(fixedCaches):P2} | {Agreement(updated):P2} | {Early(fixedCaches):P1} | {Early(updated):P1} | {updates.Count(u => u.Outcome.Accepted)} / {updates.Length} |");
        }
        md.AppendLine();
        md.AppendLine(ExitBreakdown(fixedCaches, updated));
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture,
            $"Updater: {online.CpuSeconds:F1} s of CPU in {online.Updates.Count(u => !u.Outcome.TooFewRows)} attempts ({online.Updates.Count(u => u.Outcome.Accepted)} accepted{(online.Updates.Any(u => u.Outcome.TooFewRows) ? $"; {online.Updates.Count(u => u.Outcome.TooFewRows)} more stopped before training, for too few rows" : "")}); {online}.");
        foreach (var (request, outcome) in online.Updates)
        {
            var started = online.Starts.TryGetValue(outcome.Number, out var start) && start != request
                ? string.Create(CultureInfo.InvariantCulture, $"began at request {start}, ended at {request}")
                : string.Create(CultureInfo.InvariantCulture, $"request {request}");
            md.AppendLine(CultureInfo.InvariantCulture, $"- update {outcome.Number} ({started}, after {outcome.Trigger}): {outcome.Reason}");
        }
        AppendEvents(md, online);
        md.AppendLine();
        return md.ToString();
    }

    /// <summary>A replay's changes of traffic seen and its reactions, one line each.</summary>
    private static void AppendEvents(StringBuilder md, OnlineSummary online)
    {
        foreach (var (request, change) in online.Changes)
            md.AppendLine(CultureInfo.InvariantCulture,
                $"- change of traffic seen at request {request}: the exit mix of the newest sampled requests lay {change.Distance:F2} from the one before (total variation); sampled requests from number {change.BeganAtSample} on judged apart");
        foreach (var reason in online.Reactions.Select(r => r.Reason).Distinct()) md.AppendLine(CultureInfo.InvariantCulture, $"- reaction: {reason}");
    }
}
