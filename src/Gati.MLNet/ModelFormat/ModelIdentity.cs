using System.Security.Cryptography;
using Gati.MLNet.Models;
using Gati.MLNet.Transforms;

namespace Gati.MLNet.ModelFormat;

/// <summary>
/// The identity of a base model: for a Gati ResNet the SHA-256 of its weights envelope (the key it has in a model zip),
/// for an imported network the SHA-256 of its ONNX graph.
/// </summary>
internal static class ModelIdentity
{
    public static string Of(TorchSharp.torch.nn.Module module)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true)) ModuleWeights.Write(writer, module);
        return Hash(buffer.ToArray());
    }

    public static string Of(BaseModel model)
    {
        switch (model)
        {
            case ResNetBaseModel resnet:
                var shared = resnet.Network;
                if (!shared.IsBuilt && shared.StoredEnvelope is { } stored) return Hash(stored);
                using (shared.Use()) return Of(shared.Module);
            default:
                return Hash(model.GraphBytes);
        }
    }

    public static string Of(FeatureExtractingTransformer extractor) => Of(((IBaseModelHolder)extractor).Base.Model);

    private static string Hash(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();
}
