using System.Globalization;
using System.Text.Json;
using Gati.MLNet.Data;

namespace Gati.MLNet.Models;

/// <summary>The metadata_props Gati writes into its ONNX graphs (docs/model-format.md#onnx-export).</summary>
internal static class OnnxMetadata
{
    /// <summary>The metadata of any base model: its ResNet configuration when it is a Gati ResNet, its description otherwise.</summary>
    public static Dictionary<string, string> For(BaseModel model)
    {
        Dictionary<string, string> metadata;
        if (model is ResNetBaseModel resnet)
        {
            metadata = For(resnet.Config, model.ClassNames, model.InputNormalization);
        }
        else
        {
            metadata = new Dictionary<string, string>
            {
                ["gati.format"] = "1",
                ["gati.description"] = model.Description,
                ["gati.inputShape"] = model.InputShape.ToString(),
                ["gati.classes"] = model.ClassCount.ToString(CultureInfo.InvariantCulture),
                ["gati.classNames"] = JsonSerializer.Serialize(model.ClassNames),
            };
            if (model.InputNormalization is { } normalization)
            {
                metadata["gati.normalization.mean"] = JsonSerializer.Serialize(normalization.Mean);
                metadata["gati.normalization.std"] = JsonSerializer.Serialize(normalization.Std);
            }
        }
        return metadata;
    }

    public static Dictionary<string, string> For(ResNetConfig config, IReadOnlyList<string>? classNames = null, ChannelNormalization? normalization = null)
    {
        var metadata = new Dictionary<string, string>
        {
            ["gati.format"] = "1",
            ["gati.architecture"] = config.Architecture.ToString(),
            ["gati.baseWidth"] = config.BaseWidth.ToString(CultureInfo.InvariantCulture),
            ["gati.inputShape"] = config.InputShape.ToString(),
            ["gati.classes"] = config.ClassCount.ToString(CultureInfo.InvariantCulture),
        };
        if (classNames is not null) metadata["gati.classNames"] = JsonSerializer.Serialize(classNames);
        if (normalization is not null)
        {
            // Pixels scaled to [0, 1], then (pixel - mean[c]) / std[c]: what the graph's Image input expects.
            metadata["gati.normalization.mean"] = JsonSerializer.Serialize(normalization.Mean);
            metadata["gati.normalization.std"] = JsonSerializer.Serialize(normalization.Std);
        }
        return metadata;
    }
}
