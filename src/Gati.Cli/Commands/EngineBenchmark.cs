using Gati.MLNet.Inference.Backends;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.Cli.Commands;

internal sealed record EngineBenchmarkSettings(string Model, DatasetSpec Dataset, int[] BatchSizes, long? Rows, int MemoryPredictions, string Device,
    string? Output, IReadOnlyList<EarlyExitEngineOptions> Backends, int Rounds, int ImagesPerRound);

/// <summary>
/// <c>gati bench engine</c>: the full model and early exit on each backend, side by side in one process: answers on
/// the whole split (agreement with the base model, accuracy, where the backends' exit decisions differ and whether
/// those rows sit at a threshold), then latency per call at each batch size, the engines measured in alternating
/// rounds (each round runs one engine over a slice of the images, the next engine over the same slice) so that all
/// see the same machine state; mean, p50 and p99 over all rounds. ONNX Runtime's full model is also measured as the
/// exported one-graph model in a session of its own (its own thread pool, spinning allowed: ONNX Runtime's
/// defaults), so that early exit is compared with ONNX Runtime at its fastest, not with a handicapped baseline.
/// </summary>
internal sealed class EngineBenchmark(IAnsiConsole console)
{
    /// <summary>One engine under measurement.</summary>
    private sealed record Contender(string Name, Func<float[], int, (int[] Labels, int[] Exits)> Predict, IDisposable? Owner);

    public int Run(EngineBenchmarkSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var context = new MLContext(0);
        // The weights go where every backend measured wants them; where they disagree, ONNX Runtime runs its own copy: the CPU.
        var loadDevices = settings.Backends.Select(ExecutionBackends.ResolveLoadDevice).Distinct().ToArray();
        DeviceOptions.ConfigureContext(context, loadDevices.Length == 1 ? loadDevices[0] : "cpu");
        var model = context.Gati().LoadModel(settings.Model, out _);
        var contenders = new List<Contender>();
        try
        {
            var parts = LoadedModel.Parts(model, settings.Model);
            var baseModel = parts.BaseTransformer;
            var caches = parts.Caches ?? throw new InvalidOperationException($"{settings.Model} holds no learned caches: choose them with gati optimize.");
            var size = parts.BaseModel.InputShape.Size;
            var data = settings.Dataset.Load(context, DatasetSplit.Test, settings.Rows);
            var (images, labels) = EarlyExitEvaluation.Load(parts.Inputs(data), parts.ImageColumnName, size);
            if (labels.Length == 0) throw new InvalidOperationException("The evaluation data has no rows: there is nothing to measure.");

            var engines = new List<string>();
            var backends = settings.Backends;
            if (backends.Any(b => !ExecutionBackends.For(b.Backend).Supports(parts.BaseModel)))
            {
                // An imported network is served by ONNX Runtime only.
                backends = backends.Where(b => ExecutionBackends.For(b.Backend).Supports(parts.BaseModel)).ToArray();
                if (backends.Count == 0)
                    throw new InvalidOperationException($"{parts.BaseModel.Description} is served by ONNX Runtime only: use --backend onnxruntime.");
                console.MarkupLineInterpolated($"[yellow]{parts.BaseModel.Description} is served by ONNX Runtime only: TorchSharp is left out.[/]");
            }
            foreach (var options in backends)
            {
                var backend = ExecutionBackends.For(options.Backend);
                var name = backend.DisplayName;
                var full = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(baseModel, options);
                contenders.Add(Wrap($"{name} full", full));
                if (backend.RunsOnnxGraph)
                    contenders.Add(OneGraph(context, model, parts.BaseModel, size));
                if (backend.HasSingleGraph(options))
                {
                    // The same engine calling one session per segment at batch 1 too: what the single graph saves.
                    var perSegment = options.Clone();
                    perSegment.SingleGraphAtBatchOne = false;
                    contenders.Add(Wrap($"{name} early exit (segment calls)", context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(model, perSegment)));
                }
                var early = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(model, options);
                contenders.Add(Wrap($"{name} early exit", early));
                console.MarkupLineInterpolated($"{name}: {early.BackendDescription}");
                engines.Add($"{name} early exit: {early.BackendDescription}");
            }

            var report = new StringBuilder();
            report.AppendLine(CultureInfo.InvariantCulture,
                $"Model: {Path.GetFileName(settings.Model)}, {parts.Description}, caches on layers {string.Join(", ", caches.Caches.Select(c => $"{c.Layer} ({c.PredictorArchitecture})"))}.");
            report.AppendLine(CultureInfo.InvariantCulture,
                $"Machine: {Environment.ProcessorCount} logical CPUs ({CpuModel()}), .NET {Environment.Version}, TorchSharp with {torch.get_num_threads()} threads ({TorchRuntime.Kind}), ONNX Runtime {OrtEnv.Instance().GetVersionString()}.");
            foreach (var engine in engines) report.AppendLine(CultureInfo.InvariantCulture, $"Engine: {engine}.");
            report.AppendLine();
            report.Append(Answers(contenders, images, labels, size, caches));
            foreach (var batch in settings.BatchSizes)
                report.Append(Latency(contenders, images, labels.Length, size, batch, settings.Rounds, settings.ImagesPerRound));
            if (settings.MemoryPredictions > 0)
                report.AppendLine().AppendLine(Memory(contenders.Last(c => c.Name.EndsWith("early exit", StringComparison.Ordinal)), images, size, settings.MemoryPredictions));
            report.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"Wall time {clock.Elapsed.TotalSeconds:F0} s.");
            if (settings.Output is { } output) AtomicFile.WriteAllText(output, report.ToString());
            console.WriteLine(report.ToString());
            return 0;
        }
        finally
        {
            foreach (var contender in contenders) contender.Owner?.Dispose();
            LoadedModel.Dispose(model);
        }
    }

    private static Contender Wrap(string name, EarlyExitPredictionEngine<ImageInput, EarlyExitPrediction> engine) => new(name,
        (images, count) =>
        {
            var answers = engine.Predict(images, count);
            return (answers.Select(p => (int)p.PredictedLabel - 1).ToArray(), answers.Select(p => p.ExitLayer).ToArray());
        },
        engine);

    /// <summary>The exported one-graph model in a session with ONNX Runtime's own defaults for threads (all cores, spinning).</summary>
    private static Contender OneGraph(MLContext context, ITransformer model, BaseModel baseModel, int size)
    {
        var path = Path.Combine(Path.GetTempPath(), $"gati-bench-{Environment.ProcessId}.onnx");
        context.Gati().ExportOnnx(model, path);
        var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = Environment.ProcessorCount };
        var session = new InferenceSession(path, options);
        File.Delete(path);
        var shape = baseModel.InputShape;
        var classes = baseModel.ClassCount;
        var inputNames = new[] { "Image" };
        var outputNames = new[] { "Score" };
        var scores = new float[1];
        var runOptions = new RunOptions();
        (int[], int[]) Predict(float[] images, int count)
        {
            if (scores.Length < count * classes) scores = new float[count * classes];
            using var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, images.AsMemory(0, count * size), [count, shape.Channels, shape.Height, shape.Width]);
            using var output = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, scores.AsMemory(0, count * classes), [count, classes]);
            session.Run(runOptions, inputNames, [input], outputNames, [output]);
            var labels = new int[count];
            for (var i = 0; i < count; i++)
            {
                var row = scores.AsSpan(i * classes, classes);
                for (var c = 1; c < classes; c++) if (row[c] > row[labels[i]]) labels[i] = c;
            }
            return (labels, new int[count]);
        }
        return new Contender("ONNX Runtime full (one graph, own pool)", Predict, new Disposables(session, options, runOptions));
    }

    private sealed class Disposables(params IDisposable[] items) : IDisposable
    {
        public void Dispose()
        {
            foreach (var item in items) item.Dispose();
        }
    }

    /// <summary>Answers on every row at batch 64: agreement with TorchSharp's full model (the base model), accuracy, exit differences.</summary>
    private string Answers(List<Contender> contenders, float[] images, uint[] labels, int size, LearnedCachesTransformer caches)
    {
        var rows = labels.Length;
        var runs = contenders.ToDictionary(c => c.Name, c => Chunks(rows, 64).Select(r => c.Predict(images.AsSpan(r.Start * size, r.Count * size).ToArray(), r.Count)).ToArray());
        var answers = runs.ToDictionary(p => p.Key, p => p.Value.SelectMany(r => r.Labels).ToArray());
        var exits = runs.Where(p => p.Key.Contains("early exit", StringComparison.Ordinal)).ToDictionary(p => p.Key, p => p.Value.SelectMany(r => r.Exits).ToArray());
        var reference = answers.First(a => a.Key.EndsWith(" full", StringComparison.Ordinal)).Value;
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"Answers on all {rows} test images (batch 64); agreement with the base model = the same label as {answers.First(a => a.Key.EndsWith(" full", StringComparison.Ordinal)).Key}:");
        md.AppendLine();
        md.AppendLine("| engine | agreement with base | accuracy | exit early |");
        md.AppendLine("|---|---|---|---|");
        foreach (var (name, labelsOf) in answers)
        {
            var agree = labelsOf.Zip(reference).Count(p => p.First == p.Second) / (double)rows;
            var accuracy = labelsOf.Zip(labels).Count(p => p.First + 1 == p.Second) / (double)rows;
            var early = exits.TryGetValue(name, out var e) ? (e.Count(x => x > 0) / (double)rows).ToString("P1", CultureInfo.InvariantCulture) : "-";
            md.AppendLine(CultureInfo.InvariantCulture, $"| {name} | {agree:P2} | {accuracy:P2} | {early} |");
            console.MarkupLineInterpolated($"{name}: agreement {agree:P2}, accuracy {accuracy:P2}, exit early {early}");
        }
        if (exits.Count >= 2)
        {
            md.AppendLine();
            var (first, a) = exits.First();
            foreach (var (other, b) in exits.Skip(1))
            {
                var differing = Enumerable.Range(0, rows).Where(i => a[i] != b[i]).ToArray();
                var atThreshold = differing.Count(i => NearThreshold(caches, images.AsSpan(i * size, size).ToArray(), Math.Min(Layer(a[i]), Layer(b[i]))));
                var line = string.Create(CultureInfo.InvariantCulture,
                    $"Exit decisions, {first} against {other}: identical on {rows - differing.Length} of {rows} rows; {differing.Length} differ, {atThreshold} of them with the selector within 1e-4 of its threshold (float rounding).");
                md.AppendLine(line).AppendLine();
                console.WriteLine(line);
            }
        }
        // Batch 1 takes other paths (ONNX Runtime's single graph with If-node exits): the same answers, row by row.
        foreach (var contender in contenders.Where(c => c.Name.StartsWith("ONNX Runtime early exit", StringComparison.Ordinal)))
        {
            var atBatch64 = runs[contender.Name].SelectMany(r => r.Labels.Zip(r.Exits)).ToArray();
            var same = Enumerable.Range(0, rows).Count(i => contender.Predict(images.AsSpan(i * size, size).ToArray(), 1) is var one && (one.Labels[0], one.Exits[0]) == atBatch64[i]);
            var line = string.Create(CultureInfo.InvariantCulture, $"{contender.Name} at batch 1: the same label and exit as at batch 64 on {same} of {rows} rows.");
            md.AppendLine(line).AppendLine();
            console.WriteLine(line);
        }
        return md.ToString();

        static int Layer(int exit) => exit == 0 ? int.MaxValue : exit;
    }

    /// <summary>Whether the selector of the cache at <paramref name="layer"/> sits within 1e-4 of its threshold for this image (TorchSharp, float32).</summary>
    private static bool NearThreshold(LearnedCachesTransformer caches, float[] image, int layer)
    {
        var cache = caches.Caches.FirstOrDefault(c => c.Layer == layer);
        if (cache is null) return false;
        var features = new float[cache.InputSize];
        using (var extraction = caches.BaseModel.OpenExtraction([new FeatureRequest(layer, FeatureReduction.None)], "auto"))
            extraction.Extract(image, 1, [features], null, null);
        using (cache.Predictor.Use())
        using (cache.Selector.Use())
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var x = tensor(features, [1, cache.InputSize]).to(cache.Predictor.Device);
            var probability = cache.Selector.Module.HitProbability(cache.Predictor.Module.forward(x)).cpu().item<float>();
            return Math.Abs(probability - cache.Calibration.Threshold) < 1e-4;
        }
    }

    private static IEnumerable<(int Start, int Count)> Chunks(int rows, int batch)
    {
        for (var start = 0; start < rows; start += batch) yield return (start, Math.Min(batch, rows - start));
    }

    private string Latency(List<Contender> contenders, float[] images, int rows, int size, int batch, int rounds, int imagesPerRound)
    {
        var times = contenders.ToDictionary(c => c.Name, _ => new List<double>());
        var byExit = contenders.ToDictionary(c => c.Name, _ => new Dictionary<int, List<double>>()); // batch 1: latency by exit layer
        var callsPerRound = Math.Max(1, Math.Min(rows / batch, Math.Max(1, imagesPerRound / batch)));
        var batches = Chunks(rows, batch).Where(r => r.Count == batch).Select(r => images.AsSpan(r.Start * size, r.Count * size).ToArray()).ToArray();
        foreach (var contender in contenders)
            for (var warm = 0; warm < 20; warm++) contender.Predict(batches[warm % batches.Length], batch);
        var next = 0;
        for (var round = 0; round < rounds; round++)
        {
            var slice = Enumerable.Range(0, callsPerRound).Select(i => batches[(next + i) % batches.Length]).ToArray();
            next += callsPerRound;
            // Rotate the order so that no engine always runs right after the same other one.
            for (var k = 0; k < contenders.Count; k++)
            {
                var contender = contenders[(k + round) % contenders.Count];
                var list = times[contender.Name];
                foreach (var input in slice)
                {
                    var start = Stopwatch.GetTimestamp();
                    var (_, exits) = contender.Predict(input, batch);
                    var ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                    list.Add(ms);
                    if (batch == 1)
                    {
                        if (!byExit[contender.Name].TryGetValue(exits[0], out var atExit)) byExit[contender.Name][exits[0]] = atExit = [];
                        atExit.Add(ms);
                    }
                }
            }
        }
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"Batch {batch}: {rounds} rounds x {callsPerRound} calls per engine (latency per call, ms):");
        md.AppendLine();
        md.AppendLine("| engine | mean | p50 | p99 | speedup vs TorchSharp full (mean) | speedup vs fastest ONNX Runtime full (mean) |");
        md.AppendLine("|---|---|---|---|---|---|");
        var torchFull = times.TryGetValue("TorchSharp full", out var t) ? t.Average() : double.NaN;
        var ortFull = times.Where(p => p.Key.StartsWith("ONNX Runtime full", StringComparison.Ordinal)).Select(p => p.Value.Average()).DefaultIfEmpty(double.NaN).Min();
        foreach (var (name, list) in times)
        {
            var mean = list.Average();
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {name} | {mean:F3} | {EarlyExitEvaluation.Percentile(list, 0.5):F3} | {EarlyExitEvaluation.Percentile(list, 0.99):F3} | {Ratio(torchFull, mean)} | {Ratio(ortFull, mean)} |");
            console.MarkupLineInterpolated($"batch {batch} {name}: mean {mean:F3} ms, p50 {EarlyExitEvaluation.Percentile(list, 0.5):F3}, p99 {EarlyExitEvaluation.Percentile(list, 0.99):F3}");
        }
        md.AppendLine();
        var early = byExit.Where(p => p.Key.Contains("early exit", StringComparison.Ordinal)).ToArray();
        if (batch == 1 && early.Length > 0)
        {
            md.AppendLine("Batch 1 by exit layer (0: the base model answered); share of calls, then p50 / mean ms per engine:");
            md.AppendLine();
            md.AppendLine(CultureInfo.InvariantCulture, $"| exit layer | share | {string.Join(" | ", early.Select(p => p.Key))} |");
            md.AppendLine(CultureInfo.InvariantCulture, $"|---|---|{string.Concat(early.Select(_ => "---|"))}");
            var layers = early.SelectMany(p => p.Value.Keys).Distinct().OrderBy(l => l == 0 ? int.MaxValue : l);
            var calls = early[0].Value.Values.Sum(l => l.Count);
            foreach (var layer in layers)
            {
                var share = early[0].Value.TryGetValue(layer, out var first) ? first.Count / (double)calls : 0;
                var cells = early.Select(p => p.Value.TryGetValue(layer, out var l)
                    ? string.Create(CultureInfo.InvariantCulture, $"{EarlyExitEvaluation.Percentile(l, 0.5):F3} / {l.Average():F3}")
                    : "-");
                md.AppendLine(CultureInfo.InvariantCulture, $"| {layer} | {share:P1} | {string.Join(" | ", cells)} |");
            }
            md.AppendLine();
        }
        return md.ToString();

        static string Ratio(double reference, double value) => double.IsNaN(reference) ? "-" : string.Create(CultureInfo.InvariantCulture, $"{reference / value:F2}x");
    }

    /// <summary>Resident memory before and after many batch-1 predictions of one engine.</summary>
    private string Memory(Contender engine, float[] images, int size, int predictions)
    {
        var rows = images.Length / size;
        var inputs = Enumerable.Range(0, Math.Min(rows, 256)).Select(i => images.AsSpan(i * size, size).ToArray()).ToArray();
        for (var i = 0; i < 2000; i++) engine.Predict(inputs[i % inputs.Length], 1);
        using var process = Process.GetCurrentProcess();
        process.Refresh();
        var before = process.WorkingSet64;
        var liveBefore = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < predictions; i++) engine.Predict(inputs[i % inputs.Length], 1);
        var seconds = clock.Elapsed.TotalSeconds;
        process.Refresh();
        var after = process.WorkingSet64;
        var liveAfter = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
        var line = string.Create(CultureInfo.InvariantCulture,
            $"Native memory over {predictions:N0} batch-1 predictions of {engine.Name} ({seconds:F0} s): resident {before / 1048576.0:F0} MB before, {after / 1048576.0:F0} MB after ({(after - before) / 1048576.0:+0;-0} MB); live TorchSharp tensors {liveBefore} before, {liveAfter} after.");
        console.WriteLine(line);
        return line;
    }

    private static string CpuModel()
    {
        if (!File.Exists("/proc/cpuinfo")) return "unknown CPU";
        var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
        return line is null ? "unknown CPU" : line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
    }
}
