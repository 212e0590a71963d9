namespace Gati.Cli.Commands;

/// <summary><c>gati evaluate</c>: accuracy, per-class accuracy and confusion matrix of a saved model.</summary>
internal static class EvaluateCommand
{
    public static Command Create()
    {
        var arguments = new EvaluationArguments("The model zip written by gati train-base.", "Which split to evaluate on: test or train.",
            "Evaluate on the first N rows only.");
        var report = new Option<string?>("--report-dir") { Description = "Also write evaluation.md and confusion-matrix.csv to this folder." };

        var command = arguments.CreateCommand("evaluate", "Evaluate a saved model on a dataset split: accuracy, per-class accuracy and the confusion matrix.", report);
        command.SetRun(arguments.Runtime, (result, _) =>
        {
            var settings = new EvaluateSettings(arguments.ModelPath(result), arguments.Dataset.Read(result),
                arguments.Split.Read(result), result.GetValue(arguments.Rows),
                result.GetValue(report), arguments.Device(result));
            return new EvaluateRunner(AnsiConsole.Console).Run(settings);
        });
        return command;
    }
}

/// <summary>Settings of <c>gati evaluate</c>.</summary>
internal sealed record EvaluateSettings(string Model, DatasetSpec Dataset, DatasetSplit Split, long? Rows, string? ReportDir, string Device);

/// <summary>Runs <c>gati evaluate</c>.</summary>
internal sealed class EvaluateRunner(IAnsiConsole console)
{
    public int Run(EvaluateSettings settings)
    {
        var context = DeviceContext.Create(settings.Device, seed: null);
        var model = context.Gati().LoadModel(settings.Model, out _);
        try
        {
            LoadedModel.Parts(model, settings.Model); // a zip of other Gati components says so, not "column not found"
            var data = settings.Dataset.Load(context, settings.Split, settings.Rows);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var evaluation = Evaluation.Run(context, model, data);
            console.MarkupLineInterpolated(
                $"[bold]{settings.Model}[/] on {settings.Dataset.Name} {settings.Split.ToString().ToLowerInvariant()} ({evaluation.Rows} images, {clock.Elapsed.TotalSeconds:F1} s)");
            console.MarkupLineInterpolated($"Accuracy: [bold]{evaluation.Accuracy:P2}[/]   macro accuracy: {evaluation.MacroAccuracy:P2}   log-loss: {evaluation.LogLoss:F4}");

            var perClass = new Table().AddColumn("class").AddColumn(new TableColumn("accuracy").RightAligned());
            for (var i = 0; i < evaluation.ClassNames.Count; i++)
                perClass.AddRow(Markup.Escape(evaluation.ClassNames[i]), evaluation.PerClassAccuracy[i].ToString("P2", CultureInfo.InvariantCulture));
            console.Write(perClass);

            var confusion = new Table().Title("confusion matrix (rows: true class, columns: predicted)").AddColumn("");
            for (var j = 0; j < evaluation.ClassNames.Count; j++) confusion.AddColumn(new TableColumn(j.ToString(CultureInfo.InvariantCulture)).RightAligned());
            for (var i = 0; i < evaluation.ClassNames.Count; i++)
                confusion.AddRow([$"{i} {Markup.Escape(evaluation.ClassNames[i])}", .. evaluation.Confusion[i].Select(c => c.ToString("F0", CultureInfo.InvariantCulture))]);
            console.Write(confusion);

            if (settings.ReportDir is { } dir) WriteReport(dir, settings, evaluation);
            return 0;
        }
        finally
        {
            (model as IDisposable)?.Dispose();
        }
    }

    private void WriteReport(string dir, EvaluateSettings settings, Evaluation evaluation)
    {
        Directory.CreateDirectory(dir);
        var md = new StringBuilder();
        md.AppendLine(CultureInfo.InvariantCulture, $"# Evaluation of {Path.GetFileName(settings.Model)}");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Dataset: {settings.Dataset.Name}, split {settings.Split.ToString().ToLowerInvariant()}, {evaluation.Rows} images.");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"- accuracy: {evaluation.Accuracy:P2}");
        md.AppendLine(CultureInfo.InvariantCulture, $"- macro accuracy: {evaluation.MacroAccuracy:P2}");
        md.AppendLine(CultureInfo.InvariantCulture, $"- log-loss: {evaluation.LogLoss:F4}");
        md.AppendLine();
        md.AppendLine("| class | accuracy |");
        md.AppendLine("|---|---|");
        for (var i = 0; i < evaluation.ClassNames.Count; i++)
            md.AppendLine(CultureInfo.InvariantCulture, $"| {evaluation.ClassNames[i]} | {evaluation.PerClassAccuracy[i]:P2} |");
        AtomicFile.WriteAllText(Path.Combine(dir, "evaluation.md"), md.ToString());

        var csv = new StringBuilder();
        csv.AppendLine("true\\predicted," + string.Join(",", evaluation.ClassNames.Select(Csv.Escape)));
        for (var i = 0; i < evaluation.ClassNames.Count; i++)
            csv.AppendLine(Csv.Escape(evaluation.ClassNames[i]) + "," + string.Join(",", evaluation.Confusion[i].Select(c => c.ToString("F0", CultureInfo.InvariantCulture))));
        AtomicFile.WriteAllText(Path.Combine(dir, "confusion-matrix.csv"), csv.ToString());
        console.MarkupLineInterpolated($"Wrote {Path.Combine(dir, "evaluation.md")} and confusion-matrix.csv.");
    }
}
