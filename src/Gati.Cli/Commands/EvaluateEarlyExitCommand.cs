namespace Gati.Cli.Commands;

/// <summary><c>gati evaluate-early-exit</c>.</summary>
internal static class EvaluateEarlyExitCommand
{
    public static Command Create()
    {
        var arguments = new EvaluationArguments("Model zip with chosen caches (gati optimize) or any model with learned caches.", "test or train.",
            "Use only the first N rows.");
        var batchSizes = new Option<string>("--batch-sizes") { Description = "Batch sizes to measure, comma-separated.", DefaultValueFactory = _ => "1,64" }.ParsedBy(v => ParseBatchSizes(v));
        var outputDir = new Option<string?>("--output-dir", "-o") { Description = "Write early-exit.md, early-exit.csv and exits.png here." };
        var command = arguments.CreateCommand("evaluate-early-exit",
            "Early exit against the full base model on the same device and batch sizes: agreement, accuracy, exits per layer, latency mean/p50/p99 and speedup.",
            batchSizes, outputDir);
        var serving = new ServingArguments();
        serving.AddTo(command);
        command.SetRun(arguments.Runtime, (result, _) =>
        {
            var sizes = ParseBatchSizes(result.GetValue(batchSizes)!);
            return new EarlyExitEvaluation(AnsiConsole.Console).RunAndReport(new EarlyExitEvaluationSettings(arguments.ModelPath(result), arguments.Dataset.Read(result),
                arguments.Split.Read(result), result.GetValue(arguments.Rows), sizes, result.GetValue(outputDir),
                arguments.Device(result), CommandLineText.Of(result), serving.Read(result, arguments.Device(result))[0]));
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
