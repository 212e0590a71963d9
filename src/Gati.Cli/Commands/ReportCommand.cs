namespace Gati.Cli.Commands;

/// <summary><c>gati report</c>: tables and plots from trained models.</summary>
internal static class ReportCommand
{
    public static Command Create() =>
        CommandActions.Group("report", "Write reports (markdown, CSV, PNG) about trained models.",
            CreatePredictors());

    private static Command CreatePredictors()
    {
        var dataset = new DatasetArguments();
        var runtime = new RuntimeArguments();
        var model = new Option<string>("--model", "-m") { Description = "The model zip written by gati train-predictors (base model + predictors).", Required = true };
        var outputDir = new Option<string>("--output-dir", "-o") { Description = "Folder for predictors.md, agreement.csv, cost.csv and agreement.png.", Required = true };
        var split = new SplitArguments("Split on which agreement is measured.");
        var rows = new Option<long?>("--rows") { Description = "Use only the first N rows of the split." }.AtLeast(1L);
        var costLayer = new Option<int?>("--cost-layer") { Description = "Layer of the cost table (batch-1 latency and memory per architecture); default: the second-to-last trained layer (the seed's layer 7 of ResNet-18)." }.AtLeast(1);
        var latencyRuns = new Option<int>("--latency-runs") { Description = "Timed batch-1 forward passes per architecture (median reported).", DefaultValueFactory = _ => 500 }.AtLeast(1);
        var command = new Command("predictors",
            "The seed's tables for a trained model: agreement with the base model per layer and architecture (markdown, CSV, PNG plot), and the cost of each architecture at one layer (batch-1 latency, parameter and activation memory).");
        command.Options.Add(model);
        dataset.AddTo(command);
        command.AddOptions(split.Split, rows, outputDir, costLayer, latencyRuns);
        runtime.AddTo(command);
        command.SetRun(runtime, (result, _) =>
        {
            var settings = new PredictorReportSettings(result.GetValue(model)!, dataset.Read(result),
                split.Read(result), result.GetValue(rows), result.GetValue(outputDir)!,
                result.GetValue(costLayer), result.GetValue(latencyRuns), result.GetValue(runtime.Device)!, CommandLineText.Of(result));
            return new PredictorReport(AnsiConsole.Console).Run(settings);
        });
        return command;
    }
}
