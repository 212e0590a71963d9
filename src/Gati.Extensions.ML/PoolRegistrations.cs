namespace Gati.Extensions.ML;

/// <summary>A model file registered with a pool.</summary>
/// <param name="Name">The model's name ("" for the default model).</param>
/// <param name="Path">Its file.</param>
/// <param name="WatchForChanges">Reload when the file changes.</param>
public sealed record ModelRegistration(string Name, string Path, bool WatchForChanges);

/// <summary>The models registered for one pool type (collected from the builder's FromFile calls).</summary>
internal sealed class PoolRegistrations<TInput, TOutput> where TInput : class where TOutput : class, new()
{
    /// <summary>Options are named after the pool type, so pools of different types keep separate settings.</summary>
    public static string OptionsName => typeof(EarlyExitPredictionEnginePool<TInput, TOutput>).FullName!;

    public List<ModelRegistration> Models { get; } = [];
}
