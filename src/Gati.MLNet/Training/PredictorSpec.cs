using System.Globalization;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Transforms;

namespace Gati.MLNet.Training;

/// <summary>One predictor to train: its layer, architecture and columns.</summary>
/// <param name="Layer">1-based layer whose features it reads.</param>
/// <param name="Architecture">FC, Pool or Conv with hyperparameters.</param>
/// <param name="FeatureColumnName">The feature column (default Layer{n}).</param>
/// <param name="ScoreColumnName">Output log-probabilities (default L{n}.{arch}.Score).</param>
/// <param name="PredictedLabelColumnName">Output predicted class (default L{n}.{arch}.PredictedLabel).</param>
public sealed record PredictorSpec(int Layer, PredictorArchitecture Architecture, string? FeatureColumnName = null,
    string? ScoreColumnName = null, string? PredictedLabelColumnName = null)
{
    internal string Feature => FeatureColumnName ?? "Layer" + Layer.ToString(CultureInfo.InvariantCulture);

    internal string Score => ScoreColumnName ?? PredictorTransformer.DefaultColumnNames(Layer, Architecture).Score;

    internal string Predicted => PredictedLabelColumnName ?? PredictorTransformer.DefaultColumnNames(Layer, Architecture).PredictedLabel;

    /// <inheritdoc/>
    public override string ToString() => $"layer {Layer} {Architecture}";
}
