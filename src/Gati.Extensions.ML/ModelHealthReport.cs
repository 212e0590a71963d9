namespace Gati.Extensions.ML;

/// <summary>
/// What a <see cref="ModelEntry{TInput, TOutput}"/> reports about its health: serving, degraded (the last load failed, or
/// the file was deleted) or unavailable, with the reason in words and the warnings.
/// </summary>
/// <param name="displayName">The model's name in logs, metrics and health.</param>
/// <param name="path">The model file.</param>
/// <param name="backoff">The failed loads and the next attempt.</param>
/// <param name="fileMissingSince">When the watched file was deleted (null: present, or not watched).</param>
internal sealed class ModelHealthReport(string displayName, string path, ReloadBackoff backoff, Func<DateTimeOffset?> fileMissingSince)
{
    /// <summary>Why no generation serves, and when the next attempt runs.</summary>
    public string Unavailable() =>
        $"Model '{displayName}' is not loaded: {backoff.LastError ?? "its file could not be loaded"}{backoff.RetryText()}";

    /// <summary>State, reason and what serves, for the generation serving now (null: none is loaded).</summary>
    public ModelHealth Of<TInput, TOutput>(ModelGeneration<TInput, TOutput>? generation) where TInput : class where TOutput : class, new()
    {
        var warnings = Warnings(generation);
        var failed = backoff.Failed;
        var error = backoff.LastError;
        var next = backoff.NextRetryAt;
        if (generation is null)
            return new ModelHealth(displayName, path, ModelState.Unavailable, Unavailable(), 0, failed, error, next, warnings);
        if (error is not null)
            return new ModelHealth(displayName, path, ModelState.Degraded,
                $"the last load of the file failed: {error}{backoff.RetryText()}; generation {generation.Number} keeps serving", generation.Number, failed, error, next, warnings);
        if (fileMissingSince() is { } missing)
            return new ModelHealth(displayName, path, ModelState.Degraded,
                string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"the model file was deleted at {missing:HH:mm:ss} UTC; generation {generation.Number} keeps serving, but a restart would fail"),
                generation.Number, failed, null, null, warnings);
        return new ModelHealth(displayName, path, ModelState.Serving, $"model generation {generation.Number} loaded ({generation.Source})", generation.Number, failed,
            null, null, warnings);
    }

    /// <summary>Conditions that need attention but do not stop serving.</summary>
    public string[] Warnings<TInput, TOutput>(ModelGeneration<TInput, TOutput>? generation) where TInput : class where TOutput : class, new()
    {
        var warnings = new List<string>();
        if (generation is not null && !generation.IsDisposed && generation.Engine.Caches.Count == 0)
            warnings.Add("the model has no learned caches: every request runs the full base model");
        if (fileMissingSince() is { } missing)
            warnings.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"the model file {path} was deleted at {missing:O}"));
        return [.. warnings];
    }
}
