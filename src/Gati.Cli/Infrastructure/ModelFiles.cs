using Gati.MLNet;
using Gati.MLNet.Models;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.Cli.Infrastructure;

/// <summary>Finds the components a command needs inside a loaded model zip (a single transformer or a chain).</summary>
internal static class LoadedModel
{
    public static IEnumerable<ITransformer> Components(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Components) : [model];

    /// <summary>The Gati ResNet of a model, for commands that train or report on its TorchSharp network.</summary>
    public static ResNetTransformer ResNet(ITransformer model, string path) =>
        Components(model).OfType<ResNetTransformer>().FirstOrDefault()
        ?? throw new InvalidOperationException(Components(model).Any(c => c is ImportedModelTransformer)
            ? $"{path} holds an imported base model; this command works on Gati's own ResNets (gati train-base)."
            : $"{path} holds no Gati base model (ResNetTransformer): train one with gati train-base.");

    /// <summary>The base model of a model zip (a Gati ResNet or an imported network), with the transformers before it and its caches.</summary>
    public static ModelParts Parts(ITransformer model, string path)
    {
        var components = Components(model).ToArray();
        var index = Array.FindIndex(components, c => c is ResNetTransformer or ImportedModelTransformer);
        if (index < 0)
            throw new InvalidOperationException($"{path} holds no Gati base model: train one with gati train-base, or import one with gati import.");
        return new ModelParts(components[..index], components[index], components.OfType<LearnedCachesTransformer>().LastOrDefault());
    }

    public static void Dispose(ITransformer model)
    {
        foreach (var component in Components(model)) (component as IDisposable)?.Dispose();
    }
}

/// <summary>
/// A model zip's parts as the commands use them: the transformers that make the base model's input from a dataset's
/// rows (an imported pipeline's LoadImages, ResizeImages, ExtractPixels; none for a Gati ResNet, which reads the
/// dataset's Image column), the base-model transformer, and the learned caches when there are some.
/// </summary>
internal sealed class ModelParts(IReadOnlyList<ITransformer> prefix, ITransformer baseTransformer, LearnedCachesTransformer? caches)
{
    public IReadOnlyList<ITransformer> Prefix { get; } = prefix;

    /// <summary>The <see cref="ResNetTransformer"/> or <see cref="ImportedModelTransformer"/>.</summary>
    public ITransformer BaseTransformer { get; } = baseTransformer;

    public LearnedCachesTransformer? Caches { get; } = caches;

    public BaseModel BaseModel => BaseTransformer switch
    {
        ResNetTransformer resnet => resnet.BaseModel,
        ImportedModelTransformer imported => imported.BaseModel,
        _ => throw new InvalidOperationException("Not a base model."),
    };

    /// <summary>The column the base model reads.</summary>
    public string ImageColumn => BaseTransformer switch
    {
        ResNetTransformer resnet => resnet.ImageColumnName,
        ImportedModelTransformer imported => imported.ImageColumnName,
        _ => throw new InvalidOperationException("Not a base model."),
    };

    /// <summary>A dataset's rows with the base model's input column made (nothing to do for a Gati ResNet).</summary>
    public IDataView Inputs(IDataView data)
    {
        foreach (var transformer in Prefix) data = transformer.Transform(data);
        return data;
    }

    /// <summary>The prefix and the base model: the full model, reading what the dataset holds.</summary>
    public ITransformer Full => new TransformerChain<ITransformer>([.. Prefix, BaseTransformer]);

    /// <summary>The prefix, the base model and <paramref name="caches"/>: what a model zip with those caches holds.</summary>
    public TransformerChain<ITransformer> With(LearnedCachesTransformer caches) => new([.. Prefix, BaseTransformer, caches]);

    /// <summary>For messages: "ResNet18 (width 16, 1x28x28 input)".</summary>
    public string Describe => BaseModel.Description;

    /// <summary>Where the base model runs, for messages.</summary>
    public string Device => BaseTransformer is ResNetTransformer resnet ? resnet.Device : "cpu (ONNX Runtime)";
}
