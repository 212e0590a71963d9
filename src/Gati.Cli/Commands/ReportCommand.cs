namespace Gati.Cli.Commands;

/// <summary><c>gati report</c>: tables and plots from trained models.</summary>
internal static class ReportCommand
{
    public static Command Create() =>
        CommandActions.Group("report", "Write reports (markdown, CSV, PNG) about trained models.",
            CreatePredictors());

    private static Command CreatePredictors()
    {
        var arguments = new EvaluationArguments("The model zip written by gati train-predictors (base model + predictors).", "Split on which agreement is measured.",
            "Use only the first N rows of the split.");
        var outputDir = new Option<string>("--output-dir", "-o") { Description = "Folder for predictors.md, agreement.csv, cost.csv and agreement.png.", Required = true };
        var costLayer = new Option<int?>("--cost-layer") { Description = "Layer of the cost table (batch-1 latency and memory per architecture); default: the second-to-last trained layer (the seed's layer 7 of ResNet-18)." }.AtLeast(1);
        var latencyRuns = new Option<int>("--latency-runs") { Description = "Timed batch-1 forward passes per architecture (median reported).", DefaultValueFactory = _ => 500 }.AtLeast(1);
        var command = arguments.CreateCommand("predictors",
            "The seed's tables for a trained model: agreement with the base model per layer and architecture (markdown, CSV, PNG plot), and the cost of each architecture at one layer (batch-1 latency, parameter and activation memory).",
            outputDir, costLayer, latencyRuns);
        command.SetRun(arguments.Runtime, (result, _) =>
        {
            var settings = new PredictorReportSettings(arguments.ModelPath(result), arguments.Dataset.Read(result),
                arguments.Split.Read(result), result.GetValue(arguments.Rows), result.GetValue(outputDir)!,
                result.GetValue(costLayer), result.GetValue(latencyRuns), arguments.Device(result), CommandLineText.Of(result));
            return new PredictorReport(AnsiConsole.Console).Run(settings);
        });
        return command;
    }
}
