using Gati.MLNet.Data;
using Microsoft.ML;

namespace Gati.MLNet.Transforms;

/// <summary>
/// The mapper of a classifier (a base model, a predictor): one image or feature vector column in; a score column
/// (Vector&lt;Single, k&gt; with SlotNames) and a predicted-label column (Key&lt;UInt32, k&gt; with KeyValues) out.
/// A base model's two outputs also carry the base-model annotation by which later pipeline stages (ExtractFeatures,
/// LearnedCaches) find the network.
/// </summary>
internal sealed class ClassScoreMapper : BatchMapper
{
    private readonly ScoreBatch _score;

    /// <param name="inputSchema">The schema the mapper is bound to.</param>
    /// <param name="inputColumnName">The image or feature column read.</param>
    /// <param name="inputSize">The values per row the model reads.</param>
    /// <param name="model">The model, for the message when the input column's size is wrong.</param>
    /// <param name="batchSize">Rows per call of <paramref name="score"/>.</param>
    /// <param name="classNames">Class names in label order.</param>
    /// <param name="scoreColumnName">The score output column.</param>
    /// <param name="predictedLabelColumnName">The predicted-label output column.</param>
    /// <param name="network">The base network announced on both outputs, or null (a predictor's outputs).</param>
    /// <param name="score">Fills the scores and predicted keys of a batch.</param>
    public ClassScoreMapper(DataViewSchema inputSchema, string inputColumnName, int inputSize, string model, int batchSize,
        IReadOnlyList<string> classNames, string scoreColumnName, string predictedLabelColumnName, BaseNetwork? network, ScoreBatch score)
        : base(inputSchema, [inputColumnName], batchSize)
    {
        _score = score;
        CheckInputSize(0, inputSize, model);
        var k = classNames.Count;
        Outputs =
        [
            OutputColumn.Vector(scoreColumnName, k, Announce(Annotations.SlotNames(classNames), network)),
            OutputColumn.Key(predictedLabelColumnName, k, Announce(Annotations.KeyValues(classNames), network)),
        ];
    }

    /// <summary>Scores and predicted keys of <paramref name="count"/> rows of a batch buffer (null where not wanted).</summary>
    public delegate void ScoreBatch(float[] inputs, int count, float[]? scores, uint[]? predicted);

    public override IReadOnlyList<OutputColumn> Outputs { get; }

    public override void Map(float[][] inputs, int count, Array?[] outputs, bool[] active) =>
        _score(inputs[0], count, (float[]?)outputs[0], (uint[]?)outputs[1]);

    private static DataViewSchema.Annotations Announce(DataViewSchema.Annotations annotations, BaseNetwork? network) =>
        network is null ? annotations : BaseModelAnnotation.Add(annotations, network);
}
