namespace Gati.Cli.Infrastructure;

/// <summary>The parts of a loaded model zip (a single transformer or a chain) as the commands need them, read by <see cref="EarlyExitModel"/>.</summary>
internal static class LoadedModel
{
    public static IReadOnlyList<ITransformer> Components(ITransformer model) => EarlyExitModel.ComponentsOf(model);

    /// <summary>The Gati ResNet of a model, for commands that train or report on its TorchSharp network.</summary>
    public static ResNetTransformer ResNet(ITransformer model, string path) =>
        Components(model).OfType<ResNetTransformer>().FirstOrDefault()
        ?? throw new InvalidOperationException(Components(model).Any(c => c is ImportedModelTransformer)
            ? $"{path} holds an imported base model; this command works on Gati's own ResNets (gati train-base)."
            : $"{path} holds no Gati base model (ResNetTransformer): train one with gati train-base.");

    /// <summary>The base model of a model zip (a Gati ResNet or an imported network), with the transformers before it and its caches.</summary>
    public static EarlyExitModel Parts(ITransformer model, string path) => EarlyExitModel.Of(model, path);

    public static void Dispose(ITransformer model) => EarlyExitModel.DisposeComponents(model);
}
