using Microsoft.ML;
using Microsoft.ML.Data;

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
        return new Evaluation(metrics.MicroAccuracy, metrics.MacroAccuracy, rows, names, matrix.PerClassRecall.ToArray(),
            matrix.Counts.Select(r => (IReadOnlyList<double>)r.ToArray()).ToArray(), metrics.LogLoss);
    }
}
