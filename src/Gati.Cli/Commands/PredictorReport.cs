using TorchSharp;
using static TorchSharp.torch;

namespace Gati.Cli.Commands;

internal sealed record PredictorReportSettings(string Model, DatasetSpec Dataset, DatasetSplit Split, long? Rows, string OutputDir, int? CostLayer,
    int LatencyRuns, string Device, string CommandLine);

/// <summary>One predictor's row of the agreement table.</summary>
internal sealed record PredictorAgreement(int Layer, PredictorArchitecture Architecture, double Agreement, double Accuracy, long Rows);

/// <summary>
/// Where predictors disagree with the base model, by the base model's confidence (its softmax top-1 probability) in
/// buckets [0, Edges[0]), [Edges[0], Edges[1]), ..., [Edges[^1], 1]: images per bucket and, per predictor (in the
/// order of the agreement rows), disagreements per bucket.
/// </summary>
internal sealed record ConfidenceBreakdown(double[] Edges, long[] Images, long[][] Disagreements)
{
    public static readonly double[] DefaultEdges = [0.5, 0.8, 0.95, 0.99];

    public int Bucket(double confidence)
    {
        var b = 0;
        while (b < Edges.Length && confidence >= Edges[b]) b++;
        return b;
    }

    public string Label(int bucket) => string.Create(CultureInfo.InvariantCulture,
        $"{(bucket == 0 ? 0 : Edges[bucket - 1]):0.##}-{(bucket == Edges.Length ? 1 : Edges[bucket]):0.##}");
}

/// <summary>One architecture's row of the cost table.</summary>
internal sealed record PredictorCost(PredictorArchitecture Architecture, int Layer, int InputSize, double LatencyMs, long ParameterBytes, long PeakActivationBytes);

/// <summary>Runs <c>gati report predictors</c>: agreement (markdown, CSV, PNG) and cost tables.</summary>
internal sealed class PredictorReport(IAnsiConsole console)
{
    public int Run(PredictorReportSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var context = DeviceContext.Create(settings.Device);
        var model = context.Gati().LoadModel(settings.Model, out _);
        try
        {
            var predictors = LoadedModel.Components(model).OfType<PredictorTransformer>().ToArray();
            if (predictors.Length == 0) throw new InvalidOperationException($"{settings.Model} holds no predictors: train them with gati train-predictors.");
            var extractor = LoadedModel.Components(model).OfType<FeatureExtractingTransformer>().FirstOrDefault()
                ?? throw new InvalidOperationException($"{settings.Model} holds no feature extractor.");
            var layers = predictors.Select(p => p.Layer).Distinct().Order().ToArray();
            var costLayer = settings.CostLayer ?? (layers.Length > 1 ? layers[^2] : layers[0]);
            if (!layers.Contains(costLayer))
                throw new ArgumentException($"--cost-layer {costLayer}: {settings.Model} holds no predictors on that layer (trained layers: {string.Join(", ", layers)}).");
            var data = settings.Dataset.Load(context, settings.Split, settings.Rows);
            var (agreements, confidence) = Agreements(model, data, predictors, extractor);
            var evaluationSeconds = clock.Elapsed.TotalSeconds;

            var architectures = agreements.Select(a => a.Architecture).Distinct().ToArray();
            var costs = predictors.Where(p => p.Layer == costLayer)
                .Select(p => Cost(p, settings.LatencyRuns)).ToArray();

            Directory.CreateDirectory(settings.OutputDir);
            var parts = LoadedModel.Parts(model, settings.Model);
            var title = $"{parts.Description} on {settings.Dataset.Name} ({settings.Split.ToString().ToLowerInvariant()} split, {agreements[0].Rows} images)";
            AtomicFile.WriteAllText(Path.Combine(settings.OutputDir, "agreement.csv"), AgreementCsv(agreements));
            AtomicFile.WriteAllText(Path.Combine(settings.OutputDir, "cost.csv"), CostCsv(costs));
            AtomicFile.WriteAllText(Path.Combine(settings.OutputDir, "confidence.csv"), ConfidenceCsv(agreements, confidence));
            Plot(agreements, layers, architectures, title, Path.Combine(settings.OutputDir, "agreement.png"));
            var markdown = Markdown(settings, title, agreements, confidence, layers, architectures, costs, costLayer, parts.Device, evaluationSeconds, clock.Elapsed.TotalSeconds);
            AtomicFile.WriteAllText(Path.Combine(settings.OutputDir, "predictors.md"), markdown);
            console.WriteLine(markdown);
            console.MarkupLineInterpolated($"Wrote predictors.md, agreement.csv, confidence.csv, cost.csv and agreement.png to [bold]{settings.OutputDir}[/].");
            return 0;
        }
        finally
        {
            LoadedModel.Dispose(model);
        }
    }

    /// <summary>
    /// Agreement of every predictor with the base model's label (and accuracy on ground truth), and where the
    /// disagreements fall by the base model's confidence, in one pass.
    /// </summary>
    private static (PredictorAgreement[] Agreements, ConfidenceBreakdown Confidence) Agreements(ITransformer model, IDataView data,
        PredictorTransformer[] predictors, FeatureExtractingTransformer extractor)
    {
        var scored = model.Transform(data);
        var teacher = scored.Schema[extractor.PredictedLabelColumnName];
        var logits = scored.Schema[extractor.LogitsColumnName];
        var truth = scored.Schema["Label"];
        var columns = predictors.Select(p => scored.Schema[p.PredictedLabelColumnName]).ToArray();
        using var cursor = scored.GetRowCursor([teacher, logits, truth, .. columns]);
        var getTeacher = cursor.GetGetter<uint>(teacher);
        var getLogits = cursor.GetGetter<VBuffer<float>>(logits);
        var getTruth = cursor.GetGetter<uint>(truth);
        var getters = columns.Select(c => cursor.GetGetter<uint>(c)).ToArray();
        var agree = new long[predictors.Length];
        var correct = new long[predictors.Length];
        var edges = ConfidenceBreakdown.DefaultEdges;
        var confidence = new ConfidenceBreakdown(edges, new long[edges.Length + 1], predictors.Select(_ => new long[edges.Length + 1]).ToArray());
        long rows = 0;
        uint t = 0, y = 0, p = 0;
        VBuffer<float> z = default;
        while (cursor.MoveNext())
        {
            getTeacher(ref t);
            getLogits(ref z);
            getTruth(ref y);
            var bucket = confidence.Bucket(TopProbability(z.DenseValues()));
            confidence.Images[bucket]++;
            for (var i = 0; i < getters.Length; i++)
            {
                getters[i](ref p);
                if (p == t) agree[i]++;
                else confidence.Disagreements[i][bucket]++;
                if (p == y) correct[i]++;
            }
            rows++;
        }
        if (rows == 0) throw new InvalidOperationException("The evaluation data has no rows: there is nothing to measure agreement on.");
        return (predictors.Select((pr, i) => new PredictorAgreement(pr.Layer, pr.Architecture, (double)agree[i] / rows, (double)correct[i] / rows, rows)).ToArray(),
            confidence);
    }

    /// <summary>The largest softmax probability of a logit vector (computed stably in double).</summary>
    private static double TopProbability(IEnumerable<float> logits)
    {
        var values = logits.Select(v => (double)v).ToArray();
        var max = values.Max();
        return 1 / values.Sum(v => Math.Exp(v - max));
    }

    /// <summary>Median batch-1 latency of the predictor's forward pass on its device, and its memory cost.</summary>
    private static PredictorCost Cost(PredictorTransformer predictor, int runs)
    {
        var network = predictor.Network;
        var device = predictor.DeviceInfo;
        var times = new double[Math.Max(runs, 1)];
        lock (predictor.Gate)
        {
            using var noGrad = no_grad();
            using var x = torch.randn(1, predictor.InputSize, device: device);
            for (var i = 0; i < 20; i++)
            {
                using var scope = NewDisposeScope();
                network.forward(x).argmax(1).cpu();
            }
            for (var i = 0; i < times.Length; i++)
            {
                var start = Stopwatch.GetTimestamp();
                using var scope = NewDisposeScope();
                // Forward and bring the predicted class to the host: what an early exit needs.
                network.forward(x).argmax(1).cpu();
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
        }
        Array.Sort(times);
        var classes = predictor.ClassNames.Count;
        return new PredictorCost(predictor.Architecture, predictor.Layer, predictor.InputSize, times[times.Length / 2],
            predictor.ParameterCount * sizeof(float), predictor.Architecture.PeakActivationValues(predictor.InputSize, classes) * sizeof(float));
    }

    private static string AgreementCsv(PredictorAgreement[] agreements)
    {
        var csv = new StringBuilder("layer,architecture,agreement,accuracy,rows\n");
        foreach (var a in agreements.OrderBy(a => a.Layer))
            csv.AppendLine(CultureInfo.InvariantCulture, $"{a.Layer},{Csv.Escape(a.Architecture.ToString())},{a.Agreement:F6},{a.Accuracy:F6},{a.Rows}");
        return csv.ToString();
    }

    private static string ConfidenceCsv(PredictorAgreement[] agreements, ConfidenceBreakdown confidence)
    {
        var csv = new StringBuilder("layer,architecture,base_confidence,images,disagreements\n");
        for (var i = 0; i < agreements.Length; i++)
        for (var b = 0; b < confidence.Images.Length; b++)
            csv.AppendLine(CultureInfo.InvariantCulture,
                $"{agreements[i].Layer},{Csv.Escape(agreements[i].Architecture.ToString())},{confidence.Label(b)},{confidence.Images[b]},{confidence.Disagreements[i][b]}");
        return csv.ToString();
    }

    private static string CostCsv(PredictorCost[] costs)
    {
        var csv = new StringBuilder("architecture,layer,input_size,latency_ms_batch1,parameter_bytes,peak_activation_bytes\n");
        foreach (var c in costs)
            csv.AppendLine(CultureInfo.InvariantCulture, $"{Csv.Escape(c.Architecture.ToString())},{c.Layer},{c.InputSize},{c.LatencyMs:F4},{c.ParameterBytes},{c.PeakActivationBytes}");
        return csv.ToString();
    }

    private static string Markdown(PredictorReportSettings settings, string title, PredictorAgreement[] agreements, ConfidenceBreakdown confidence,
        int[] layers, PredictorArchitecture[] architectures, PredictorCost[] costs, int costLayer, string device, double evaluationSeconds, double totalSeconds)
    {
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"# Predictors of {title}");
        md.AppendLine();
        md.AppendLine("Agreement of each predictor's label with the base model's label (the seed's table).");
        md.AppendLine();
        md.AppendLine("| layer | " + string.Join(" | ", architectures.Select(a => a.ToString())) + " |");
        md.AppendLine("|---|" + string.Concat(architectures.Select(_ => "---|")));
        foreach (var layer in layers)
        {
            var cells = architectures.Select(a => agreements.FirstOrDefault(x => x.Layer == layer && x.Architecture == a) is { } found
                ? found.Agreement.ToString("P2", CultureInfo.InvariantCulture) : "-");
            md.AppendLine(CultureInfo.InvariantCulture, $"| {layer} | {string.Join(" | ", cells)} |");
        }
        md.AppendLine();
        md.AppendLine("![agreement by layer](agreement.png)");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Cost at layer {costLayer} on {device} (batch 1; median of {settings.LatencyRuns} runs, forward + predicted class to host):");
        md.AppendLine();
        md.AppendLine("| predictor | latency (ms) | parameters | peak activations |");
        md.AppendLine("|---|---|---|---|");
        foreach (var c in costs)
            md.AppendLine(CultureInfo.InvariantCulture, $"| {c.Architecture} | {c.LatencyMs:F3} | {Bytes(c.ParameterBytes)} | {Bytes(c.PeakActivationBytes)} |");
        md.AppendLine();
        // Disagreements of the deepest two layers' predictors by the base model's confidence (all predictors: confidence.csv).
        var deep = agreements.Select((a, i) => (a, i)).Where(x => x.a.Layer >= layers[Math.Max(0, layers.Length - 2)]).ToArray();
        md.AppendLine("Where the deepest layers' predictors disagree with the base model, by the base model's confidence (its softmax top-1");
        md.AppendLine("probability on the image): images in each bucket and each predictor's disagreements there.");
        md.AppendLine();
        md.AppendLine("| base model's confidence | images | " + string.Join(" | ", deep.Select(x => $"L{x.a.Layer} {x.a.Architecture}")) + " |");
        md.AppendLine("|---|---|" + string.Concat(deep.Select(_ => "---|")));
        for (var b = 0; b < confidence.Images.Length; b++)
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {confidence.Label(b)} | {confidence.Images[b]} | {string.Join(" | ", deep.Select(x => confidence.Disagreements[x.i][b]))} |");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Ground-truth accuracy of the predictors is in agreement.csv. Agreement pass: {evaluationSeconds:F0} s; report: {totalSeconds:F0} s.");
        md.AppendLine();
        md.AppendLine("Command:");
        md.AppendLine();
        md.AppendLine("```");
        md.AppendLine(settings.CommandLine);
        md.AppendLine("```");
        return md.ToString();
    }

    private static string Bytes(long bytes) => bytes >= 1 << 20
        ? string.Create(CultureInfo.InvariantCulture, $"{bytes / 1048576.0:F1} MB")
        : string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:F1} KB");

    private static void Plot(PredictorAgreement[] agreements, int[] layers, PredictorArchitecture[] architectures, string title, string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var architecture in architectures)
        {
            var points = agreements.Where(a => a.Architecture == architecture).OrderBy(a => a.Layer).ToArray();
            var scatter = plot.Add.Scatter(points.Select(p => (double)p.Layer).ToArray(), points.Select(p => p.Agreement * 100).ToArray());
            scatter.LegendText = architecture.ToString();
            scatter.LineWidth = 2;
            scatter.MarkerSize = 7;
        }
        plot.Title(title);
        plot.XLabel("layer (residual block)");
        plot.YLabel("agreement with the base model (%)");
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(layers.Select(l => (double)l).ToArray(),
            layers.Select(l => l.ToString(CultureInfo.InvariantCulture)).ToArray());
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        AtomicFile.Write(path, stream =>
        {
            var bytes = plot.GetImageBytes(900, 560, ScottPlot.ImageFormat.Png);
            stream.Write(bytes);
        });
    }
}
