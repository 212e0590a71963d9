using Gati.MLNet.Models;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// A model as Gati serves and trains it — the one reading of a (possibly nested) transformer chain that the catalog, the
/// model files, the CLI and the serving pool share: the ML.NET transforms before the base model (they make its image
/// column: an imported pipeline's LoadImages, ResizeImages, ExtractPixels; none for a Gati ResNet), the base model's
/// transformer (<see cref="ResNetTransformer"/> or <see cref="ImportedModelTransformer"/>), and the learned caches when
/// the model has some.
/// </summary>
internal sealed class EarlyExitModel
{
    private EarlyExitModel(IReadOnlyList<ITransformer> components, int baseIndex, LearnedCachesTransformer? caches)
    {
        Components = components;
        Prefix = components.Take(baseIndex).ToArray();
        BaseTransformer = components[baseIndex];
        Base = ((IBaseModelHolder)BaseTransformer).Base;
        Caches = caches;
    }

    /// <summary>Every transformer of the model in order, nested chains flattened.</summary>
    public IReadOnlyList<ITransformer> Components { get; }

    /// <summary>The transformers before the base model: they make its image column from what the data holds.</summary>
    public IReadOnlyList<ITransformer> Prefix { get; }

    /// <summary>The first component that holds the base model (in a saved model: the ResNet or imported network itself).</summary>
    public ITransformer BaseTransformer { get; }

    /// <summary>The base model and the image column it reads.</summary>
    internal BaseNetwork Base { get; }

    /// <summary>The base model.</summary>
    public BaseModel BaseModel => Base.Model;

    /// <summary>The image column the base model reads.</summary>
    public string ImageColumnName => Base.ImageColumnName;

    /// <summary>The model's learned caches (the last, when a chain holds several); null for a base model alone.</summary>
    public LearnedCachesTransformer? Caches { get; }

    /// <summary>For messages: "ResNet18 (width 16, 1x28x28 input)".</summary>
    public string Description => BaseModel.Description;

    /// <summary>Where the base model runs, for messages: a Gati ResNet's TorchSharp device; an imported network runs on ONNX Runtime.</summary>
    public string Device => BaseTransformer is ResNetTransformer resnet ? resnet.Device : "cpu (ONNX Runtime)";

    /// <summary>The transformers of <paramref name="model"/> in order, nested chains flattened.</summary>
    public static IReadOnlyList<ITransformer> ComponentsOf(ITransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var list = new List<ITransformer>();
        Add(model);
        return list;

        void Add(ITransformer t)
        {
            if (t is IEnumerable<ITransformer> chain)
                foreach (var inner in chain) Add(inner);
            else
                list.Add(t);
        }
    }

    /// <summary>The model's parts, or null when it holds no Gati base model.</summary>
    public static EarlyExitModel? Find(ITransformer model)
    {
        var components = ComponentsOf(model);
        var index = components.ToList().FindIndex(c => c is IBaseModelHolder);
        return index < 0 ? null : new EarlyExitModel(components, index, components.OfType<LearnedCachesTransformer>().LastOrDefault());
    }

    /// <summary>The model's parts; throws, naming <paramref name="source"/> (e.g. its file), when it holds no Gati base model.</summary>
    public static EarlyExitModel Of(ITransformer model, string source) =>
        Find(model) ?? throw new InvalidOperationException(
            $"{source} holds no Gati base model: train one with gati train-base (or TrainResNet), or import one with gati import (or ImportBaseModel, ImportOnnxModel).");

    /// <summary>The transforms before the base model as one chain, or null when there are none.</summary>
    public ITransformer? PrefixChain => Prefix.Count > 0 ? new TransformerChain<ITransformer>([.. Prefix]) : null;

    /// <summary>A dataset's rows with the base model's input column made (nothing to do for a Gati ResNet).</summary>
    public IDataView Inputs(IDataView data)
    {
        ArgumentNullException.ThrowIfNull(data);
        foreach (var transformer in Prefix) data = transformer.Transform(data);
        return data;
    }

    /// <summary>The prefix and the base model: the full model, reading what the dataset holds.</summary>
    public ITransformer Full => new TransformerChain<ITransformer>([.. Prefix, BaseTransformer]);

    /// <summary>The prefix, the base model and <paramref name="caches"/>: what a model zip with those caches holds.</summary>
    public TransformerChain<ITransformer> With(LearnedCachesTransformer caches)
    {
        ArgumentNullException.ThrowIfNull(caches);
        return new([.. Prefix, BaseTransformer, caches]);
    }

    /// <summary>Every component in order with <see cref="Caches"/> replaced by <paramref name="caches"/> (the model itself when it has none).</summary>
    public TransformerChain<ITransformer> Replacing(LearnedCachesTransformer caches)
    {
        ArgumentNullException.ThrowIfNull(caches);
        var components = Components.ToArray();
        var index = Caches is null ? -1 : Array.IndexOf(components, Caches);
        if (index < 0) throw new InvalidOperationException("The model has no learned caches to replace.");
        components[index] = caches;
        return new(components);
    }

    /// <summary>Disposes every component of <paramref name="model"/> that owns native memory (networks, sessions).</summary>
    public static void DisposeComponents(ITransformer model)
    {
        foreach (var component in ComponentsOf(model)) (component as IDisposable)?.Dispose();
    }
}
