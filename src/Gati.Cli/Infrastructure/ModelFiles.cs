using Gati.MLNet;
using Gati.MLNet.Transforms;
using Microsoft.ML;

namespace Gati.Cli.Infrastructure;

/// <summary>Finds the components a command needs inside a loaded model zip (a single transformer or a chain).</summary>
internal static class LoadedModel
{
    public static IEnumerable<ITransformer> Components(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Components) : [model];

    public static ResNetTransformer BaseModel(ITransformer model, string path) =>
        Components(model).OfType<ResNetTransformer>().FirstOrDefault()
        ?? throw new InvalidOperationException($"{path} holds no Gati base model (ResNetTransformer): train one with gati train-base.");

    public static void Dispose(ITransformer model)
    {
        foreach (var component in Components(model)) (component as IDisposable)?.Dispose();
    }
}
