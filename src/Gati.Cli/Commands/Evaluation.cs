namespace Gati.Cli.Commands;

/// <summary>Accuracy, per-class accuracy and the confusion matrix of a classifier on labelled data.</summary>
internal sealed record Evaluation(double Accuracy, double MacroAccuracy, long Rows, IReadOnlyList<string> ClassNames,
    IReadOnlyList<double> PerClassAccuracy, IReadOnlyList<IReadOnlyList<double>> Confusion, double LogLoss)
{
    public static Evaluation Run(MLContext context, ITransformer model, IDataView data,
        string labelColumn = "Label", string scoreColumn = "Score", string predictedColumn = "PredictedLabel")
    {
        var scored = model.Transform(data);
        var metrics = context.MulticlassClassification.Evaluate(scored, labelColumn, scoreColumn, predictedColumn);
        var matrix = metrics.ConfusionMatrix;
        var names = Gati.MLNet.Data.Annotations.TryGetKeyNames(scored.Schema[predictedColumn])
                    ?? Enumerable.Range(1, matrix.NumberOfClasses).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        var rows = (long)matrix.Counts.Sum(r => r.Sum());
        // ML.NET's evaluator skips rows whose score is NaN: an empty or partly counted evaluation is an error, not 0 %.
        var expected = data.GetRowCount() ?? CountRows(data);
        if (expected == 0) throw new InvalidOperationException("The evaluation data has no rows: there is nothing to evaluate (check --rows and the dataset files).");
        if (rows != expected)
            throw new InvalidOperationException($"Only {rows} of {expected} rows got a valid score: the model produced NaN scores for the others (a model from a diverged training run?).");
        return new Evaluation(metrics.MicroAccuracy, metrics.MacroAccuracy, rows, names, matrix.PerClassRecall.ToArray(),
            matrix.Counts.Select(r => (IReadOnlyList<double>)r.ToArray()).ToArray(), metrics.LogLoss);
    }

    private static long CountRows(IDataView data)
    {
        long count = 0;
        using var cursor = data.GetRowCursor([]);
        while (cursor.MoveNext()) count++;
        return count;
    }
}
