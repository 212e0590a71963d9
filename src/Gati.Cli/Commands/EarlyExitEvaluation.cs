using Gati.MLNet.Inference.Backends;

namespace Gati.Cli.Commands;

internal sealed record EarlyExitEvaluationSettings(string Model, DatasetSpec Dataset, DatasetSplit Split, long? Rows, int[] BatchSizes, string? OutputDir,
    string Device, string CommandLine, EarlyExitEngineOptions Serving);

/// <summary>Figures of one batch size.</summary>
internal sealed record EarlyExitResult(int BatchSize, long Images, double Agreement, double Accuracy, double FullAccuracy, double HitRate,
    IReadOnlyDictionary<int, double> ExitShare, double MeanMs, double P50Ms, double P99Ms, double FullMeanMs, double FullP50Ms, double FullP99Ms,
    string FullModel = "", string FullModelRace = "")
{
    public double Speedup => FullMeanMs / MeanMs;
}

/// <summary>
/// Early exit against the full base model on the same device and batch sizes: agreement with the base model,
/// accuracy on ground truth, exits per layer, and per-call latency (mean, p50, p99). The full model is the fastest way
/// to run it on these cores at each batch size (<see cref="FullModelBaseline"/>: Gati's engine without caches, or the
/// whole graph in a plain ONNX Runtime session on 1 thread, every core, or every core spinning), and the two are
/// interleaved in blocks of calls so that both see the same machine state.
/// </summary>
internal sealed class EarlyExitEvaluation(IAnsiConsole console)
{
    private const int WarmupCalls = 20;

    public (EarlyExitResult[] Results, LearnedCache[] Caches) Run(EarlyExitEvaluationSettings settings)
    {
        // Under ONNX Runtime the TorchSharp networks only provide the weights: they stay on the CPU.
        var context = DeviceContext.Create(ExecutionBackends.ResolveLoadDevice(settings.Serving.Backend, settings.Device));
        var model = context.Gati().LoadModel(settings.Model, out _);
        try
        {
            var parts = LoadedModel.Parts(model, settings.Model);
            using var early = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(model, settings.Serving);
            using var full = new FullModelBaseline(context, parts.BaseTransformer, parts.BaseModel, settings.Serving);
            var data = settings.Dataset.Load(context, settings.Split, settings.Rows);
            var size = parts.BaseModel.InputShape.Size;
            var (images, labels) = Load(parts.Inputs(data), parts.ImageColumnName, size);
            console.MarkupLineInterpolated(
                $"Early exit with caches on layers ({string.Join(", ", early.Caches.Select(c => c.Layer))}) vs the full {parts.Description} on {early.BackendDescription}, {labels.Length} rows of the {settings.Dataset.Name} {settings.Split.ToString().ToLowerInvariant()} split.");
            var results = settings.BatchSizes.Select(b => Measure(early, full, images, labels, b, size)).ToArray();
            return (results, early.Caches.ToArray());
        }
        finally
        {
            LoadedModel.Dispose(model);
        }
    }

    public int RunAndReport(EarlyExitEvaluationSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var (results, caches) = Run(settings);
        var markdown = Markdown(settings, results, caches, clock.Elapsed.TotalSeconds);
        console.WriteLine(markdown);
        if (settings.OutputDir is { } dir)
        {
            Directory.CreateDirectory(dir);
            AtomicFile.WriteAllText(Path.Combine(dir, "early-exit.md"), markdown);
            AtomicFile.WriteAllText(Path.Combine(dir, "early-exit.csv"), Csv(results));
            PlotExits(results[0], Path.Combine(dir, "exits.png"));
            console.MarkupLineInterpolated($"Wrote early-exit.md, early-exit.csv and exits.png to [bold]{dir}[/].");
        }
        return 0;
    }

    internal static (float[] Images, uint[] Labels) Load(IDataView data, int size) => Load(data, "Image", size);

    /// <summary>
    /// The base model's input (<paramref name="imageColumn"/>) and the label of every row, in one array: rows are kept
    /// as they come and copied once at the end (a growing list of floats would hold up to 2.3 times the images while it
    /// grows: 10,000 images of 3 x 224 x 224 are 6 GB as floats).
    /// </summary>
    internal static (float[] Images, uint[] Labels) Load(IDataView data, string imageColumn, int size)
    {
        var rows = new List<float[]>();
        var labels = new List<uint>();
        using (var cursor = data.GetRowCursor([data.Schema[imageColumn], data.Schema["Label"]]))
        {
            var getImage = cursor.GetGetter<VBuffer<float>>(data.Schema[imageColumn]);
            var getLabel = cursor.GetGetter<uint>(data.Schema["Label"]);
            VBuffer<float> image = default;
            uint label = 0;
            while (cursor.MoveNext())
            {
                getImage(ref image);
                getLabel(ref label);
                if (image.Length != size) throw new InvalidDataException($"Row {cursor.Position}: image has {image.Length} values, expected {size}.");
                var row = new float[size];
                image.CopyTo(row);
                rows.Add(row);
                labels.Add(label);
            }
        }
        var images = GC.AllocateUninitializedArray<float>(checked(rows.Count * size));
        for (var i = 0; i < rows.Count; i++)
        {
            rows[i].CopyTo(images, i * size);
            rows[i] = [];
        }
        return (images, labels.ToArray());
    }

    private EarlyExitResult Measure(EarlyExitPredictionEngine<ImageInput, EarlyExitPrediction> early, FullModelBaseline baseline,
        float[] images, uint[] labels, int batchSize, int size)
    {
        var rows = labels.Length;
        if (rows == 0) throw new InvalidOperationException("The evaluation data has no rows: there is nothing to evaluate (check --rows and the dataset files).");
        var (full, race) = baseline.Fastest(images, rows, size, batchSize);
        console.MarkupLineInterpolated($"batch {batchSize}: {race}");
        var earlyTimes = new List<double>();
        var fullTimes = new List<double>();
        var earlyAnswers = new EarlyExitPrediction[rows];
        var fullAnswers = new uint[rows];
        var span = images.AsSpan();
        for (var warm = 0; warm < WarmupCalls; warm++)
        {
            var n = Math.Min(batchSize, rows);
            early.Predict(span[..(n * size)], n);
            full.Predict(span[..(n * size)].ToArray(), n);
        }
        // Interleaved in blocks of calls (FullModelBaseline.BlockCalls), the order alternating, so that both see the same
        // machine state and neither always finds the caches warm or pays for the other's spinning threads.
        foreach (var (earlyTurn, firstCall, endCall) in FullModelBaseline.Turns((rows + batchSize - 1) / batchSize))
            for (var call = firstCall; call < endCall; call++)
            {
                var start = call * batchSize;
                var n = Math.Min(batchSize, rows - start);
                var batch = span.Slice(start * size, n * size).ToArray();
                if (earlyTurn) Timed(() => early.Predict(batch, n), earlyTimes).CopyTo(earlyAnswers, start);
                else Timed(() => full.Predict(batch, n), fullTimes).CopyTo(fullAnswers, start);
            }
        var agreement = earlyAnswers.Zip(fullAnswers).Count(p => p.First.PredictedLabel == p.Second) / (double)rows;
        var accuracy = earlyAnswers.Zip(labels).Count(p => p.First.PredictedLabel == p.Second) / (double)rows;
        var fullAccuracy = fullAnswers.Zip(labels).Count(p => p.First == p.Second) / (double)rows;
        var exitShare = earlyAnswers.GroupBy(a => a.ExitLayer).ToDictionary(g => g.Key, g => g.Count() / (double)rows);
        var result = new EarlyExitResult(batchSize, rows, agreement, accuracy, fullAccuracy, 1 - exitShare.GetValueOrDefault(0),
            exitShare, earlyTimes.Average(), Percentile(earlyTimes, 0.5), Percentile(earlyTimes, 0.99),
            fullTimes.Average(), Percentile(fullTimes, 0.5), Percentile(fullTimes, 0.99), full.Name, race);
        console.MarkupLineInterpolated(
            $"batch {batchSize}: agreement {result.Agreement:P2}, accuracy {result.Accuracy:P2} (full {result.FullAccuracy:P2}), {result.HitRate:P1} exit early, mean {result.MeanMs:F3} ms vs {result.FullMeanMs:F3} ms ({full.Name}): [bold]{result.Speedup:F2}x[/]");
        return result;
    }

    private static T Timed<T>(Func<T> call, List<double> times)
    {
        var start = Stopwatch.GetTimestamp();
        var result = call();
        times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return result;
    }

    internal static double Percentile(IReadOnlyCollection<double> values, double q)
    {
        var sorted = values.Order().ToArray();
        var index = (int)Math.Ceiling(q * sorted.Length) - 1;
        return sorted[Math.Clamp(index, 0, sorted.Length - 1)];
    }

    private static string Markdown(EarlyExitEvaluationSettings settings, EarlyExitResult[] results, LearnedCache[] caches, double seconds)
    {
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"# Early exit: {Path.GetFileName(settings.Model)} on {settings.Dataset.Name} ({settings.Split.ToString().ToLowerInvariant()}, {results[0].Images} images, {ExecutionBackends.For(settings.Serving.Backend).DisplayName}, device {settings.Device})");
        md.AppendLine();
        md.AppendLine("Caches:");
        md.AppendLine();
        foreach (var cache in caches) md.AppendLine(CultureInfo.InvariantCulture, $"- {cache}");
        if (caches.Length == 0) md.AppendLine("- none (the full model)");
        md.AppendLine();
        md.AppendLine("| batch | agreement with base | accuracy (early exit) | accuracy (full) | exit early | mean ms | p50 ms | p99 ms | full mean ms | full p50 ms | full p99 ms | speedup (mean) |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in results)
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.BatchSize} | {r.Agreement:P2} | {r.Accuracy:P2} | {r.FullAccuracy:P2} | {r.HitRate:P1} | {r.MeanMs:F3} | {r.P50Ms:F3} | {r.P99Ms:F3} | {r.FullMeanMs:F3} | {r.FullP50Ms:F3} | {r.FullP99Ms:F3} | {r.Speedup:F2}x |");
        md.AppendLine();
        md.AppendLine("Exits per layer (share of inputs; 0 = ran the full model):");
        md.AppendLine();
        md.AppendLine("| batch | " + string.Join(" | ", results[0].ExitShare.Keys.Order().Select(k => k == 0 ? "full" : $"layer {k}")) + " |");
        md.AppendLine("|---|" + string.Concat(results[0].ExitShare.Keys.Select(_ => "---|")));
        foreach (var r in results)
            md.AppendLine(CultureInfo.InvariantCulture, $"| {r.BatchSize} | {string.Join(" | ", results[0].ExitShare.Keys.Order().Select(k => r.ExitShare.GetValueOrDefault(k).ToString("P1", CultureInfo.InvariantCulture)))} |");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Latency is per engine call (one batch), measured after {WarmupCalls} warm-up calls, early exit and full model interleaved in blocks of {FullModelBaseline.BlockCalls} calls. Wall time {seconds:F0} s.");
        md.AppendLine();
        md.AppendLine("The full model at each batch size is the fastest way found to run it on these cores (raced before the timed run):");
        md.AppendLine();
        foreach (var r in results) md.AppendLine(CultureInfo.InvariantCulture, $"- batch {r.BatchSize}: **{r.FullModel}**; {r.FullModelRace}.");
        md.AppendLine();
        md.AppendLine("```");
        md.AppendLine(settings.CommandLine);
        md.AppendLine("```");
        return md.ToString();
    }

    private static string Csv(EarlyExitResult[] results)
    {
        var csv = new StringBuilder("batch_size,images,agreement,accuracy,full_accuracy,hit_rate,mean_ms,p50_ms,p99_ms,full_mean_ms,full_p50_ms,full_p99_ms,speedup\n");
        foreach (var r in results)
            csv.AppendLine(CultureInfo.InvariantCulture,
                $"{r.BatchSize},{r.Images},{r.Agreement:F6},{r.Accuracy:F6},{r.FullAccuracy:F6},{r.HitRate:F6},{r.MeanMs:F4},{r.P50Ms:F4},{r.P99Ms:F4},{r.FullMeanMs:F4},{r.FullP50Ms:F4},{r.FullP99Ms:F4},{r.Speedup:F4}");
        return csv.ToString();
    }

    private static void PlotExits(EarlyExitResult result, string path)
    {
        var plot = new ScottPlot.Plot();
        var keys = result.ExitShare.Keys.Order().ToArray();
        var bars = plot.Add.Bars(keys.Select((_, i) => (double)i).ToArray(), keys.Select(k => result.ExitShare[k] * 100).ToArray());
        bars.Color = ScottPlot.Colors.SteelBlue;
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(keys.Select((_, i) => (double)i).ToArray(),
            keys.Select(k => k == 0 ? "full" : $"layer {k}").ToArray());
        plot.Title(string.Create(CultureInfo.InvariantCulture, $"Where inputs exit (batch {result.BatchSize}: {result.Speedup:F2}x, agreement {result.Agreement:P2})"));
        plot.YLabel("share of inputs (%)");
        plot.Axes.Margins(bottom: 0);
        AtomicFile.Write(path, stream => stream.Write(plot.GetImageBytes(800, 480, ScottPlot.ImageFormat.Png)));
    }

}
