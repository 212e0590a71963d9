namespace Gati.Cli.Infrastructure;

/// <summary>
/// How the commands that train on a dataset split its training rows: the last <c>holdoutRows</c> are held out
/// (never used to train a predictor); training uses the first rows before them (all, or <c>trainRows</c>).
/// </summary>
internal sealed record HeldOutSplit(IDataView Split, IDataView Training, IDataView HeldOut, long TrainingRows, long HeldOutRows)
{
    public static HeldOutSplit Create(MLContext context, DatasetSpec dataset, long holdoutRows, long? trainRows = null)
    {
        var split = dataset.Load(context, DatasetSplit.Train);
        var total = split.GetRowCount() ?? throw new InvalidOperationException("The training split has no row count.");
        if (holdoutRows < 2 || holdoutRows >= total)
            throw new ArgumentException($"--holdout-rows must be between 2 and {total - 1} (the training split has {total} rows).");
        var available = total - holdoutRows;
        var training = Math.Min(trainRows ?? available, available);
        return new HeldOutSplit(split, context.Data.TakeRows(split, training), context.Data.SkipRows(split, available), training, holdoutRows);
    }

    /// <summary>
    /// The <paramref name="rows"/> training rows just before the held-out rows: rows that neither predictors (trained
    /// on fewer rows from the start) nor selectors and thresholds (fitted on the held-out rows) have seen.
    /// </summary>
    public IDataView Fresh(MLContext context, long rows)
    {
        var available = (Split.GetRowCount() ?? 0) - HeldOutRows;
        if (rows < 2 || rows > available)
            throw new ArgumentException($"--fresh-rows must be between 2 and {available} (the rows before the {HeldOutRows} held-out rows).");
        return context.Data.SkipRows(context.Data.TakeRows(Split, available), available - rows);
    }
}
