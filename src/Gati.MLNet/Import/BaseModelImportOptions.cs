using Gati.MLNet.Data;

namespace Gati.MLNet.Import;

/// <summary>What the output of an imported ONNX classifier holds.</summary>
public enum OnnxScores
{
    /// <summary>Class scores before softmax (a final linear layer's output).</summary>
    Logits,

    /// <summary>Class probabilities (a final Softmax is removed and applied again by Gati; without one, the logits are their logarithm).</summary>
    Probabilities,
}

/// <summary>Settings of <see cref="GatiCatalog.ImportOnnxModel(string, OnnxImportOptions?)"/>: an ONNX image classifier as a base model.</summary>
public sealed class OnnxImportOptions
{
    /// <summary>The output holding the class scores; the graph's only output (or <c>Logits</c> of a Gati export) when null.</summary>
    public string? OutputName { get; set; }

    /// <summary>What that output holds.</summary>
    public OnnxScores Scores { get; set; } = OnnxScores.Logits;

    /// <summary>An ONNX graph run before the network (e.g. ML.NET's <c>ResNetPreprocess.onnx</c>); its output must be the network's input.</summary>
    public string? PreprocessingModelPath { get; set; }

    /// <summary>
    /// Cut points by the names of values in the network (e.g. <c>ReLU301_Output_0</c>); null finds them automatically:
    /// the values every path from the input to the output passes through (for a ResNet, each residual block's output),
    /// or those a Gati export recorded.
    /// </summary>
    public IReadOnlyList<string>? CutPoints { get; set; }

    /// <summary>Class names in score order; null uses those a Gati export recorded, else "0".."k-1".</summary>
    public IReadOnlyList<string>? ClassNames { get; set; }

    /// <summary>The image column the model reads.</summary>
    public string ImageColumnName { get; set; } = DefaultColumnNames.Image;

    /// <summary>
    /// How raw pixels scaled to [0, 1] become the model's input, per channel (<c>(pixel − mean) / std</c>): for serving code
    /// that decodes images itself; null when unknown (a Gati export's recorded normalisation is used then).
    /// </summary>
    public ChannelNormalization? InputNormalization { get; set; }

    /// <summary>What the base model is called in reports; the file's name by default.</summary>
    public string? Description { get; set; }
}

/// <summary>Settings of <see cref="GatiCatalog.ImportBaseModel(Microsoft.ML.ITransformer, Microsoft.ML.DataViewSchema, BaseModelImportOptions?)"/>.</summary>
public sealed class BaseModelImportOptions
{
    /// <summary>Cut points by value names of the network; found automatically when null (see <see cref="OnnxImportOptions.CutPoints"/>).</summary>
    public IReadOnlyList<string>? CutPoints { get; set; }

    /// <summary>What the base model is called in reports; "the ONNX file + the trainer" by default.</summary>
    public string? Description { get; set; }

    /// <summary>Rows scored per ONNX Runtime call by the base model's transformer.</summary>
    public int BatchSize { get; set; } = 16;
}
