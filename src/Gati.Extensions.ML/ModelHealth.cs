namespace Gati.Extensions.ML;

/// <summary>Whether a model serves, and how well (<see cref="ModelHealth.State"/>).</summary>
public enum ModelState
{
    /// <summary>A generation serves and the last load of the file succeeded.</summary>
    Serving,

    /// <summary>A generation serves, but the last reload failed (it is retried) or the model file is gone.</summary>
    Degraded,

    /// <summary>No generation was ever loaded: calls throw <see cref="ModelUnavailableException"/>; the load is retried.</summary>
    Unavailable,
}

/// <summary>A model's health as a load balancer or an operator needs it: state, the reason in words, what serves.</summary>
/// <param name="Name">The model's name ("default" for the default model).</param>
/// <param name="Path">The model file.</param>
/// <param name="State">Serving, degraded or unavailable.</param>
/// <param name="Reason">Why, in one sentence (what serves, or what failed and when it is tried again).</param>
/// <param name="Generation">The generation serving (0 when none).</param>
/// <param name="FailedLoads">Loads and reloads of the file that failed, retries included.</param>
/// <param name="LastError">The last load error while it is not yet fixed by a successful load; else null.</param>
/// <param name="NextRetryAt">When the next attempt to load runs, while loading fails; else null.</param>
/// <param name="Warnings">Conditions that do not stop serving but need attention (a model without caches, a deleted file).</param>
public sealed record ModelHealth(string Name, string Path, ModelState State, string Reason, int Generation, int FailedLoads, string? LastError,
    DateTimeOffset? NextRetryAt, IReadOnlyList<string> Warnings);

/// <summary>A model of the pool has no generation to serve (its file could not be loaded yet); the message says why.</summary>
public sealed class ModelUnavailableException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public ModelUnavailableException(string message, DateTimeOffset? nextRetryAt) : base(message) => NextRetryAt = nextRetryAt;

    /// <summary>When the pool next tries to load the model (null: not scheduled).</summary>
    public DateTimeOffset? NextRetryAt { get; }
}

/// <summary>How models are named where a name must be visible.</summary>
internal static class ModelNames
{
    /// <summary>The name in logs, metrics and health: the registered one, or "default" for the default model ("").</summary>
    public static string Display(string name) => name.Length == 0 ? "default" : name;
}
