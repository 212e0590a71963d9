using System.Runtime.CompilerServices;
using Gati.MLNet.Models;
using Gati.MLNet.Torch;
using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace Gati.MLNet.ModelFormat;

/// <summary>
/// How components write the base model they hold (docs/model-format.md#base-model): a kind byte, then for a Gati ResNet
/// its configuration, the key of its TorchSharp weights and the key of its ONNX graph; for an imported network the key
/// of its ONNX graph and its description; then class names and the input normalisation. Weights and graphs are stored
/// once per zip under <c>GatiShared/</c>; loading one zip builds each base model once and shares it between its
/// components. Nothing here loads libtorch: a ResNet's network is built on first use.
/// </summary>
internal static class BaseModelFormat
{
    private const byte ResNetKind = 0;
    private const byte OnnxKind = 1;

    private static readonly ConditionalWeakTable<RepositoryReader, Dictionary<string, BaseModel>> Loaded = new();

    public static void Write(ModelSaveContext ctx, BaseModel model)
    {
        var writer = ctx.Writer;
        switch (model)
        {
            case ResNetBaseModel resnet:
                writer.Write(ResNetKind);
                ResNetConfigFormat.Write(writer, resnet.Config);
                writer.Write(SharedWeights.Save(ctx, resnet.Network));
                writer.Write(SharedWeights.SaveBytes(ctx, resnet.GraphBytes, "onnx"));
                break;
            case OnnxBaseModel onnx:
                writer.Write(OnnxKind);
                writer.Write(SharedWeights.SaveBytes(ctx, onnx.GraphBytes, "onnx"));
                writer.Write(onnx.Description);
                break;
            default:
                throw new NotSupportedException($"No model format for base model {model.GetType().Name}.");
        }
        ModelText.WriteStrings(writer, model.ClassNames);
        ModelText.WriteNormalization(writer, model.InputNormalization);
    }

    /// <summary>Reads a base model written by <see cref="Write"/>; the caller holds one reference to it.</summary>
    public static BaseModel Read(ModelLoadContext ctx, IHostEnvironment env)
    {
        var reader = ctx.Reader;
        var kind = reader.ReadByte();
        switch (kind)
        {
            case ResNetKind:
            {
                var config = ResNetConfigFormat.Read(reader);
                var weights = reader.ReadString();
                var graph = reader.ReadString();
                var (classNames, normalization) = ReadCommon(reader, config.ClassCount);
                return Shared(ctx, "resnet:" + weights, () => LoadResNet(ctx, env, config, weights, graph, classNames, normalization));
            }
            case OnnxKind:
            {
                var graph = reader.ReadString();
                var description = reader.ReadString();
                var (classNames, normalization) = ReadCommon(reader, null);
                return Shared(ctx, "onnx:" + graph, () =>
                {
                    var bytes = SharedWeights.LoadShared(ctx, graph, "onnx", $"ONNX graph of {description}", b => b);
                    try
                    {
                        return OnnxBaseModel.FromBytes(bytes, description, classNames, normalization);
                    }
                    catch (ArgumentException ex)
                    {
                        throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
                    }
                });
            }
            default:
                throw new InvalidDataException($"Corrupt model: unknown base model kind {kind}.");
        }
    }

    /// <summary>
    /// A Gati ResNet from a stream that wrote its fields itself (the ResNet transformer's, and older streams): configuration,
    /// weights key and graph key ("" when the zip holds no graph: it is then exported from the weights when needed).
    /// </summary>
    public static ResNetBaseModel ReadResNet(ModelLoadContext ctx, IHostEnvironment env, ResNetConfig config, string weights, string graph,
        IReadOnlyList<string> classNames, Data.ChannelNormalization? normalization)
    {
        var model = Shared(ctx, "resnet:" + weights, () => LoadResNet(ctx, env, config, weights, graph, classNames, normalization));
        if (model is not ResNetBaseModel resnet || resnet.Config != config)
        {
            model.Release();
            throw new InvalidDataException("Corrupt model: two components name the same weights with different architectures.");
        }
        return resnet;
    }

    private static (string[] ClassNames, Data.ChannelNormalization? Normalization) ReadCommon(BinaryReader reader, int? classes)
    {
        var classNames = ModelText.ReadStrings(reader, "class name", 100_000);
        if (classes is { } k && classNames.Length != k) throw new InvalidDataException($"Corrupt model: {classNames.Length} class names for {k} classes.");
        return (classNames, ModelText.ReadNormalization(reader));
    }

    private static ResNetBaseModel LoadResNet(ModelLoadContext ctx, IHostEnvironment env, ResNetConfig config, string weights, string graph,
        IReadOnlyList<string> classNames, Data.ChannelNormalization? normalization)
    {
        var network = SharedWeights.Load(ctx, weights, () => new ResNet(config), () => DeviceOptions.ResolveForLoadedModel(env), $"{config.Architecture} base model",
            ResNetConfigFormat.ParameterCount(config));
        try
        {
            var bytes = graph.Length == 0 ? null : SharedWeights.LoadShared(ctx, graph, "onnx", $"ONNX graph of the {config.Architecture} base model", b => b);
            return new ResNetBaseModel(config, network, classNames, normalization, bytes);
        }
        catch
        {
            network.Release();
            throw;
        }
    }

    /// <summary>The base model of this zip under <paramref name="key"/>, made once and shared (one more reference per call).</summary>
    private static BaseModel Shared(ModelLoadContext ctx, string key, Func<BaseModel> create)
    {
        var loaded = Loaded.GetOrCreateValue(ctx.Repository ?? throw new NotSupportedException("Gati models are loaded from model zips."));
        lock (loaded)
        {
            if (loaded.TryGetValue(key, out var existing) && !existing.IsReleased) return existing.Acquire();
            var created = create();
            loaded[key] = created;
            return created;
        }
    }
}
