using Gati.MLNet.Inference;
using Gati.MLNet.Online;
using Gati.MLNet.Transforms;
using Microsoft.Extensions.Logging;

namespace Gati.Extensions.ML;

/// <summary>
/// Creates the online caches of a freshly loaded generation when the pool enables them, with their reactions and
/// updates reported to the metrics and the log; the <see cref="ModelEntry{TInput, TOutput}"/> decides whether they serve.
/// </summary>
internal static class OnlineCachesStarter
{
    /// <summary>The online caches for <paramref name="generation"/>, or null when they are off or the model has no learned caches.</summary>
    /// <param name="generation">The generation just loaded from the file.</param>
    /// <param name="displayName">The model's name in logs and metrics.</param>
    /// <param name="options">Pool settings (<see cref="EarlyExitPoolOptions.Online"/>).</param>
    /// <param name="metrics">Where reactions and updates are counted.</param>
    /// <param name="logger">Where they are logged.</param>
    /// <param name="install">Called (on the updater's thread) with the caches that produced an accepted candidate, its engine and model.</param>
    public static OnlineCaches? Create<TInput, TOutput>(ModelGeneration<TInput, TOutput> generation, string displayName, EarlyExitPoolOptions options,
        ServingMetrics metrics, ILogger logger, Action<OnlineCaches, EarlyExitEngine, LearnedCachesTransformer> install)
        where TInput : class where TOutput : class, new()
    {
        if (options.Online is not { Enabled: true } settings) return null;
        var caches = EarlyExitModel.Find(generation.Model)?.Caches;
        if (caches is null || caches.Caches.Count == 0)
        {
            logger.LogWarning("Model '{Model}' has no learned caches: online caches are off for it.", displayName);
            return null;
        }
        OnlineCaches? online = null;
        online = new OnlineCaches(caches, generation.Engine.Inner, options.EngineOptions(), settings,
            (engine, model) => install(online!, engine, model));
        online.Sampler.Reacted += (_, reaction) =>
        {
            metrics.RecordReaction(displayName, reaction.Layer);
            logger.LogWarning("Model '{Model}': cache on layer {Layer} threshold {Old} -> {New}: {Reason}", displayName, reaction.Layer, reaction.OldThreshold,
                reaction.NewThreshold, reaction.Reason);
        };
        online.Updated += (_, outcome) =>
        {
            metrics.RecordUpdate(displayName, outcome);
            logger.Log(outcome.Accepted ? LogLevel.Information : LogLevel.Debug, "Model '{Model}' online update {Number} after {Trigger}: {Reason} ({Cpu:F1} s of CPU)",
                displayName, outcome.Number, outcome.Trigger, outcome.Reason, outcome.CpuSeconds);
        };
        return online;
    }
}
