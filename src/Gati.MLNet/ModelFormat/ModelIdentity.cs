using System.Security.Cryptography;
using Gati.MLNet.Transforms;

namespace Gati.MLNet.ModelFormat;

/// <summary>The identity of a network's weights: SHA-256 of its weights envelope (the key it has in a model zip).</summary>
internal static class ModelIdentity
{
    public static string Of(TorchSharp.torch.nn.Module module)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true)) ModuleWeights.Write(writer, module);
        return Convert.ToHexString(SHA256.HashData(buffer.ToArray())).ToLowerInvariant();
    }

    public static string Of(FeatureExtractingTransformer extractor)
    {
        var holder = (IBaseModelHolder)extractor;
        using (holder.Base.Network.Use()) return Of(holder.Base.Network.Module);
    }
}
