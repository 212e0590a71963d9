using Gati.MLNet.ModelFormat;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Gati.Cli.Infrastructure;
using Gati.MLNet;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Torch;
using Microsoft.ML;
using Microsoft.ML.Data;
using Spectre.Console;
using TorchSharp;

namespace Gati.Cli.Commands;

internal sealed record EngineBenchmarkSettings(string Model, DatasetSpec Dataset, int[] BatchSizes, long? Rows, int MemoryPredictions, string Device, string? Output);

/// <summary><c>gati bench engine</c>: latency of early exit against the full model, and memory over a long run.</summary>
internal sealed class EngineBenchmark(IAnsiConsole console)
{
    public int Run(EngineBenchmarkSettings settings)
    {
        var evaluation = new EarlyExitEvaluation(console);
        var (results, caches) = evaluation.Run(new EarlyExitEvaluationSettings(settings.Model, settings.Dataset, DatasetSplit.Test, settings.Rows,
            settings.BatchSizes, null, settings.Device, Environment.CommandLine));
        var report = new StringBuilder();
        report.AppendLine(CultureInfo.InvariantCulture,
            $"Machine: {Environment.ProcessorCount} logical CPUs, libtorch threads {torch.get_num_threads()}, device {settings.Device}, .NET {Environment.Version}, {TorchRuntime.Source}");
        report.AppendLine(CultureInfo.InvariantCulture, $"Model: {Path.GetFileName(settings.Model)}, caches on layers {string.Join(", ", caches.Select(c => $"{c.Layer} ({c.PredictorArchitecture})"))}");
        report.AppendLine();
        report.AppendLine("| batch | images | full mean ms | full p50 | full p99 | early-exit mean ms | p50 | p99 | speedup | agreement | exit early |");
        report.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in results)
            report.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.BatchSize} | {r.Images} | {r.FullMeanMs:F3} | {r.FullP50Ms:F3} | {r.FullP99Ms:F3} | {r.MeanMs:F3} | {r.P50Ms:F3} | {r.P99Ms:F3} | {r.Speedup:F2}x | {r.Agreement:P2} | {r.HitRate:P1} |");
        if (settings.MemoryPredictions > 0) report.AppendLine().AppendLine(Memory(settings));
        if (settings.Output is { } output) AtomicFile.WriteAllText(output, report.ToString());
        console.WriteLine(report.ToString());
        return 0;
    }

    /// <summary>Resident memory and live tensors before and after many batch-1 predictions.</summary>
    private string Memory(EngineBenchmarkSettings settings)
    {
        var context = new MLContext(0);
        DeviceOptions.ConfigureContext(context, settings.Device);
        var model = context.Gati().LoadModel(settings.Model, out _);
        try
        {
            using var engine = context.Gati().CreateEarlyExitEngine<EarlyExitEvaluation.ImageRow, EarlyExitPrediction>(model);
            var data = settings.Dataset.Load(context, DatasetSplit.Test, 256);
            var images = new List<float[]>();
            using (var cursor = data.GetRowCursor([data.Schema["Image"]]))
            {
                var getter = cursor.GetGetter<VBuffer<float>>(data.Schema["Image"]);
                VBuffer<float> value = default;
                while (cursor.MoveNext())
                {
                    getter(ref value);
                    images.Add(value.DenseValues().ToArray());
                }
            }
            var inputs = images.Select(i => new EarlyExitEvaluation.ImageRow { Image = i }).ToArray();
            for (var i = 0; i < 2000; i++) engine.Predict(inputs[i % inputs.Length]);
            using var process = Process.GetCurrentProcess();
            process.Refresh();
            var before = process.WorkingSet64;
            var liveBefore = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < settings.MemoryPredictions; i++) engine.Predict(inputs[i % inputs.Length]);
            var seconds = clock.Elapsed.TotalSeconds;
            process.Refresh();
            var after = process.WorkingSet64;
            var liveAfter = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount;
            var line = string.Create(CultureInfo.InvariantCulture,
                $"Native memory over {settings.MemoryPredictions:N0} batch-1 predictions ({seconds:F0} s): resident {before / 1048576.0:F0} MB before, {after / 1048576.0:F0} MB after ({(after - before) / 1048576.0:+0;-0} MB); live TorchSharp tensors {liveBefore} before, {liveAfter} after.");
            console.WriteLine(line);
            return line;
        }
        finally
        {
            LoadedModel.Dispose(model);
        }
    }
}
