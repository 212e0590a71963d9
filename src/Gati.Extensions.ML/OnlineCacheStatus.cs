using Gati.MLNet.Online;

namespace Gati.Extensions.ML;

/// <summary>The state of a model's continuously updated caches (docs/online.md).</summary>
/// <param name="Agreement">Live agreement with the base model over the last sampled requests, overall and per cache, with confidence bounds.</param>
/// <param name="Thresholds">The exit thresholds in force, by cache (+∞: the cache is switched off).</param>
/// <param name="Labelled">Shadow rows whose base answer is known (sampled requests and full runs).</param>
/// <param name="Dropped">Sampled requests dropped because the continuation queue was full.</param>
/// <param name="WindowRows">Rows held in the sliding window.</param>
/// <param name="WindowBytes">Bytes held in the window (never above its budget).</param>
/// <param name="UpdatesAccepted">Updates swapped in as new generations.</param>
/// <param name="UpdatesRejected">Update attempts rejected (or failed) and why: see <paramref name="LastUpdate"/>.</param>
/// <param name="LastUpdate">The last update attempt's outcome in words.</param>
/// <param name="Reactions">Threshold reactions to live agreement below the target.</param>
/// <param name="LastReaction">Why the last reaction happened.</param>
/// <param name="UpdaterCpuSeconds">Time the updater has worked, in seconds.</param>
/// <param name="AgreementTarget">The agreement the caches must keep (<see cref="OnlineCacheOptions.AgreementTarget"/>).</param>
public sealed record OnlineCacheStatus(LiveAgreementSnapshot Agreement, IReadOnlyList<float> Thresholds, long Labelled, long Dropped, int WindowRows,
    long WindowBytes, int UpdatesAccepted, int UpdatesRejected, string? LastUpdate, int Reactions, string? LastReaction, double UpdaterCpuSeconds,
    double AgreementTarget)
{
    /// <summary>Changes of traffic seen in where sampled requests exit (<see cref="OnlineCacheOptions.WatchExitMix"/>).</summary>
    public int TrafficChanges { get; init; }

    /// <summary>The last change of traffic seen, if any.</summary>
    public TrafficChange? LastTrafficChange { get; init; }

    internal static OnlineCacheStatus Of(OnlineCaches online)
    {
        var sampler = online.Sampler;
        var updates = online.Updates;
        var reactions = sampler.Reactions;
        var changes = sampler.TrafficChanges;
        return new OnlineCacheStatus(sampler.Agreement, sampler.Agreement.Layers.Select(l => l.Threshold).ToArray(), sampler.Labelled, sampler.Dropped,
            sampler.Window.Count, sampler.Window.Bytes, updates.Count(u => u.Accepted), updates.Count(u => !u.Accepted), (updates.Count > 0 ? updates[^1].Reason : null),
            reactions.Count, reactions.Count > 0 ? reactions[^1].Reason : null, online.UpdaterCpuSeconds, online.Options.AgreementTarget)
        {
            TrafficChanges = changes.Count,
            LastTrafficChange = changes.Count > 0 ? changes[^1] : null,
        };
    }
}
