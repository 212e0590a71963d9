using System.Collections.Immutable;
using System.Globalization;
using Gati.MLNet.Data;
using Gati.MLNet.Models;
using Gati.MLNet.Onnx;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;
using Microsoft.ML.Transforms;
using Microsoft.ML.Transforms.Image;
using Microsoft.ML.Transforms.Onnx;

namespace Gati.MLNet.Import;

/// <summary>
/// Reads a fitted ML.NET image-classification pipeline — the tutorial's LoadImages → ResizeImages → ExtractPixels →
/// an ONNX featurizer (<c>DnnFeaturizeImage</c> or <c>ApplyOnnxModel</c>) → optional affine normalisers → a linear
/// multiclass trainer — into what a base model needs: the ONNX graphs in the order the data flows through them, the
/// trainer's weights as a linear head (normalisers folded in), the class names, the pixel column and the transformers
/// that produce it from the pipeline's input. Anything on the way from the pixels to the trainer's features that is not
/// one of those is refused, naming the component.
/// </summary>
internal static class MLNetPipelineImport
{
    /// <summary>The trainers whose models fold into the ONNX graph as one linear layer.</summary>
    public const string SupportedTrainers =
        "linear multiclass models: LbfgsMaximumEntropy and SdcaMaximumEntropy (MaximumEntropyModelParameters: probabilities equal ML.NET's) " +
        "and SdcaNonCalibrated (LinearMulticlassModelParameters: same predicted labels; Gati's scores are the softmax of ML.NET's raw scores)";

    public sealed record Result(
        IReadOnlyList<ImportedGraph> Graphs,
        LinearHead Head,
        string TrainerName,
        IReadOnlyList<string> ClassNames,
        string PixelColumn,
        IReadOnlyList<ITransformer> Prefix,
        ChannelNormalization? InputNormalization);

    public static Result Analyze(ITransformer pipeline, DataViewSchema inputSchema)
    {
        var components = EarlyExitModel.ComponentsOf(pipeline).ToList();
        if (components.Count == 0) throw new ArgumentException("The pipeline holds no transformer.", nameof(pipeline));
        var predictorIndex = components.FindLastIndex(c => c is ISingleFeaturePredictionTransformer<object>);
        if (predictorIndex < 0)
            throw new ArgumentException("The pipeline has no trainer: ImportBaseModel takes a featurizer plus a fitted ML.NET trainer " +
                                        "(for an ONNX classifier on its own, use ImportOnnxModel).", nameof(pipeline));
        var predictor = (ISingleFeaturePredictionTransformer<object>)components[predictorIndex];
        var (weights, trainerName) = LinearWeights(predictor.Model);
        // schemas[i]: the schema component i reads.
        var schemas = new DataViewSchema[components.Count + 1];
        schemas[0] = inputSchema;
        for (var i = 0; i < components.Count; i++) schemas[i + 1] = components[i].GetOutputSchema(schemas[i]);
        var classNames = ClassNames(schemas[predictorIndex + 1], weights);

        // From the trainer's features back to the pixels: copies, affine normalisers and the ONNX models themselves.
        var wanted = predictor.FeatureColumnName;
        var graphs = new List<ImportedGraph>();
        var head = weights;
        var index = predictorIndex - 1;
        for (; index >= 0; index--)
        {
            var component = components[index];
            if (!Writes(component, schemas[index], schemas[index + 1], wanted)) continue;
            Source(component, wanted, out var source);
            switch (component)
            {
                case ColumnCopyingTransformer:
                    wanted = source!;
                    continue;
                case ColumnConcatenatingTransformer:
                    if (source is null)
                        throw new ArgumentException($"Column '{wanted}' concatenates several columns ({Describe(component)}); Gati imports features that come from one ONNX model.");
                    wanted = source;
                    continue;
                case NormalizingTransformer normalizer:
                    if (graphs.Count > 0) goto default;
                    head = FoldNormalizer(normalizer, wanted, head);
                    wanted = source!;
                    continue;
                case OnnxTransformer onnx:
                    var inputs = onnx.Inputs;
                    if (inputs.Length != 1)
                        throw new ArgumentException($"The ONNX model producing '{wanted}' reads {inputs.Length} columns ({string.Join(", ", inputs)}); Gati imports models with one image input.");
                    graphs.Insert(0, new ImportedGraph(OnnxModelFile.Parse(ModelBytes(onnx), $"ONNX model producing '{wanted}'", directory: null),
                        $"ONNX model producing '{wanted}'", wanted));
                    wanted = inputs[0];
                    continue;
                default:
                    if (graphs.Count > 0) break; // the pixels are reached: whatever produced them is the prefix
                    throw new ArgumentException(
                        $"The trainer's features '{predictor.FeatureColumnName}' come through {Describe(component)}, which Gati cannot fold into the ONNX graph " +
                        "(supported between the ONNX featurizer and the trainer: CopyColumns, Concatenate of one column, affine normalisers such as NormalizeMinMax and NormalizeMeanVariance).",
                        nameof(pipeline));
            }
            break;
        }
        if (graphs.Count == 0)
            throw new ArgumentException($"The trainer's features '{predictor.FeatureColumnName}' do not come from an ONNX model (DnnFeaturizeImage or ApplyOnnxModel) in the pipeline.", nameof(pipeline));
        var pixelColumn = wanted;
        var firstOnnx = components.FindIndex(c => c is OnnxTransformer);
        var prefix = Prefix(components.Take(firstOnnx).ToList(), schemas, pixelColumn, inputSchema);
        var normalization = Normalization(prefix, pixelColumn);
        return new Result(graphs, head, trainerName, classNames, pixelColumn, prefix, normalization);
    }


    private static string Describe(ITransformer component) => component.GetType().Name.Split('`')[0];

    /// <summary>
    /// Whether <paramref name="component"/> (reading <paramref name="before"/>, giving <paramref name="after"/>) writes
    /// <paramref name="column"/>: by what its type declares for ML.NET's own transformers, else by the column appearing or
    /// changing type (column indices say nothing: ML.NET inserts a replaced column beside its source).
    /// </summary>
    private static bool Writes(ITransformer component, DataViewSchema before, DataViewSchema after, string column) => component switch
    {
        OnnxTransformer onnx => onnx.Outputs.Contains(column),
        OneToOneTransformerBase oneToOne => oneToOne.ColumnPairs.Any(p => p.outputColumnName == column),
        ColumnConcatenatingTransformer concat => concat.Columns.Any(c => c.outputColumnName == column),
        _ => after.GetColumnOrNull(column) is { } written && (before.GetColumnOrNull(column) is not { } old || !old.Type.Equals(written.Type)),
    };

    /// <summary>The one column <paramref name="component"/> computes <paramref name="column"/> from, when its type says (null otherwise, or when several).</summary>
    private static void Source(ITransformer component, string column, out string? source)
    {
        source = null;
        switch (component)
        {
            case ColumnConcatenatingTransformer concat:
                foreach (var c in concat.Columns)
                    if (c.outputColumnName == column && c.inputColumnNames.Length == 1) source = c.inputColumnNames[0];
                break;
            case OneToOneTransformerBase oneToOne:
                foreach (var (output, input) in oneToOne.ColumnPairs)
                    if (output == column) source = input;
                break;
        }
    }

    /// <summary>The transformers (of those before the first ONNX model) that the pixel column depends on, in order.</summary>
    private static IReadOnlyList<ITransformer> Prefix(List<ITransformer> before, DataViewSchema[] schemas, string pixelColumn, DataViewSchema inputSchema)
    {
        var needed = new HashSet<string>(StringComparer.Ordinal) { pixelColumn };
        var kept = new List<ITransformer>();
        for (var i = before.Count - 1; i >= 0; i--)
        {
            var component = before[i];
            var writes = needed.Where(column => Writes(component, schemas[i], schemas[i + 1], column)).ToList();
            if (writes.Count == 0) continue;
            if (component is not (OneToOneTransformerBase or ColumnConcatenatingTransformer))
                throw new ArgumentException($"The pixels '{pixelColumn}' come through {Describe(component)}, which Gati cannot tell the inputs of; " +
                                            "supported before the featurizer: ML.NET's one-column transforms (LoadImages, ResizeImages, ExtractPixels, CopyColumns, ...).");
            foreach (var column in writes)
            {
                needed.Remove(column);
                switch (component)
                {
                    case ColumnConcatenatingTransformer concat:
                        needed.UnionWith(concat.Columns.First(c => c.outputColumnName == column).inputColumnNames);
                        break;
                    case OneToOneTransformerBase oneToOne:
                        needed.Add(oneToOne.ColumnPairs.First(p => p.outputColumnName == column).inputColumnName);
                        break;
                }
            }
            kept.Insert(0, component);
        }
        foreach (var column in needed)
            if (inputSchema.GetColumnOrNull(column) is null)
                throw new ArgumentException($"The pixels '{pixelColumn}' need column '{column}', which neither the pipeline's input nor a transformer before the featurizer provides.");
        return kept;
    }

    /// <summary>
    /// The normalisation raw pixels in [0, 1] go through to become the model's input, when ExtractPixels made the pixel
    /// column as planar R, G, B: its value is (p − offset)·scale for p in 0..255, i.e. mean offset/255, std 1/(255·scale).
    /// </summary>
    private static ChannelNormalization? Normalization(IReadOnlyList<ITransformer> prefix, string pixelColumn)
    {
        var column = pixelColumn;
        for (var i = prefix.Count - 1; i >= 0; i--)
        {
            switch (prefix[i])
            {
                case ImagePixelExtractingTransformer pixels when pixels.Columns.FirstOrDefault(c => c.Name == column) is { } options:
                    if (options.InterleavePixelColors || options.OrderOfExtraction != ImagePixelExtractingEstimator.ColorsOrder.ARGB
                        || options.ColorsToExtract != ImagePixelExtractingEstimator.ColorBits.Rgb || options.ScaleImage == 0)
                        return null;
                    var mean = options.OffsetImage / 255f;
                    var std = 1f / (255f * options.ScaleImage);
                    return std > 0 ? new ChannelNormalization([mean, mean, mean], [std, std, std]) : null;
                case ColumnCopyingTransformer copy when copy.Columns.FirstOrDefault(c => c.outputColumnName == column) is { inputColumnName: { } source }:
                    column = source;
                    break;
            }
        }
        return null;
    }

    private static (LinearHead Head, string Trainer) LinearWeights(object model)
    {
        if (model is not LinearMulticlassModelParametersBase linear)
            throw new ArgumentException($"The trainer's model is {model.GetType().Name}, which Gati cannot fold into the ONNX graph; supported: {SupportedTrainers}.");
        VBuffer<float>[] rows = [];
        linear.GetWeights(ref rows, out var classes);
        var biases = linear.GetBiases().ToArray();
        if (classes < 2 || rows.Length != classes || biases.Length != classes)
            throw new ArgumentException($"The {model.GetType().Name} has {rows.Length} weight rows, {biases.Length} biases for {classes} classes.");
        var features = rows[0].Length;
        var weight = new float[classes * features];
        for (var c = 0; c < classes; c++)
        {
            if (rows[c].Length != features) throw new ArgumentException($"The {model.GetType().Name}'s weight rows differ in length.");
            rows[c].CopyTo(weight.AsSpan(c * features, features));
        }
        var trainer = model switch
        {
            MaximumEntropyModelParameters => "maximum entropy",
            _ => "linear (non-calibrated)",
        };
        return (new LinearHead(weight, biases, classes, features).Validate(), trainer);
    }

    private static LinearHead FoldNormalizer(NormalizingTransformer normalizer, string column, LinearHead head)
    {
        var pairs = normalizer.ColumnPairs;
        var index = Array.FindIndex(pairs, p => p.outputColumnName == column);
        var parameters = normalizer.GetNormalizerModelParameters(index);
        if (parameters is not NormalizingTransformer.AffineNormalizerModelParameters<ImmutableArray<float>> affine)
            throw new ArgumentException($"The features '{column}' go through a {parameters?.GetType().Name ?? "non-vector"} normaliser; Gati folds affine ones " +
                                        "(NormalizeMinMax, NormalizeMeanVariance without log) into the linear head.");
        var scale = affine.Scale.ToArray();
        var offset = affine.Offset.IsDefaultOrEmpty ? new float[scale.Length] : affine.Offset.ToArray();
        return head.AfterAffine(scale, offset);
    }

    private static IReadOnlyList<string> ClassNames(DataViewSchema schema, LinearHead head)
    {
        var predicted = schema.GetColumnOrNull(DefaultColumnNames.PredictedLabel);
        var names = predicted is { } column ? Annotations.TryGetKeyNames(column) : null;
        if (names is { Length: var n } && n == head.Classes) return names;
        return Enumerable.Range(0, head.Classes).Select(c => c.ToString(CultureInfo.InvariantCulture)).ToArray();
    }

    /// <summary>The ONNX model bytes an ONNX transformer holds (ML.NET keeps them in a file it opened).</summary>
    private static byte[] ModelBytes(OnnxTransformer onnx)
    {
        var stream = onnx.Model.ModelStream;
        lock (stream)
        {
            var bytes = new byte[stream.Length];
            stream.Position = 0;
            stream.ReadExactly(bytes);
            return bytes;
        }
    }
}
