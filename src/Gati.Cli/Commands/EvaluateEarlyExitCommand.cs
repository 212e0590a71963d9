namespace Gati.Cli.Commands;

/// <summary><c>gati evaluate-early-exit</c>.</summary>
internal static class EvaluateEarlyExitCommand
{
    public static Command Create()
    {
        var dataset = new DatasetArguments();
        var runtime = new RuntimeArguments();
        var model = new Option<string>("--model", "-m") { Description = "Model zip with chosen caches (gati optimize) or any model with learned caches.", Required = true };
        var split = new SplitArguments("test or train.");
        var rows = new Option<long?>("--rows") { Description = "Use only the first N rows." }.AtLeast(1L);
        var batchSizes = new Option<string>("--batch-sizes") { Description = "Batch sizes to measure, comma-separated.", DefaultValueFactory = _ => "1,64" }.ParsedBy(v => ParseBatchSizes(v));
        var outputDir = new Option<string?>("--output-dir", "-o") { Description = "Write early-exit.md, early-exit.csv and exits.png here." };
        var command = new Command("evaluate-early-exit",
            "Early exit against the full base model on the same device and batch sizes: agreement, accuracy, exits per layer, latency mean/p50/p99 and speedup.");
        command.Options.Add(model);
        dataset.AddTo(command);
        command.AddOptions(split.Split, rows, batchSizes, outputDir);
        runtime.AddTo(command);
        var serving = new ServingArguments();
        serving.AddTo(command);
        command.SetRun(runtime, (result, _) =>
        {
            var sizes = ParseBatchSizes(result.GetValue(batchSizes)!);
            return new EarlyExitEvaluation(AnsiConsole.Console).RunAndReport(new EarlyExitEvaluationSettings(result.GetValue(model)!, dataset.Read(result),
                split.Read(result), result.GetValue(rows), sizes, result.GetValue(outputDir),
                result.GetValue(runtime.Device)!, CommandLineText.Of(result), serving.Read(result, result.GetValue(runtime.Device)!)[0]));
        });
        return command;
    }

    internal static int[] ParseBatchSizes(string text)
    {
        var sizes = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : throw new ArgumentException($"Batch size '{s}' is not a positive integer."))
            .ToArray();
        return sizes.Length > 0 ? sizes : throw new ArgumentException("Name at least one batch size.");
    }
}
