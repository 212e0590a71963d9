using System.Diagnostics;
using Gati.MLNet.Inference;
using Gati.MLNet.Inference.Backends;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;

namespace Gati.Extensions.ML;

/// <summary>
/// Serves early-exit models in web apps, like Microsoft.Extensions.ML's PredictionEnginePool: a default and named
/// models loaded from files, <c>Predict(modelName, input)</c>, and hot reload when a watched file changes. Unlike the
/// original: calls hold the model generation they started on, so an engine of an old model never serves after a
/// reload and old models and engines are disposed (native memory released) once their last call finishes;
/// duplicate file events are coalesced; named models are created once, race-free, when the pool is built;
/// concurrent async calls can be micro-batched; and metrics are published (<see cref="ServingMetrics"/>).
/// </summary>
/// <typeparam name="TInput">Input class with a float[] image member (see <see cref="EarlyExitPredictionEngine{TInput, TOutput}"/>).</typeparam>
/// <typeparam name="TOutput">Output class; <see cref="EarlyExitPrediction"/> has every supported member.</typeparam>
public sealed class EarlyExitPredictionEnginePool<TInput, TOutput> : IAsyncDisposable, IDisposable
    where TInput : class
    where TOutput : class, new()
{
    /// <summary>The name of the default model.</summary>
    public const string DefaultModelName = "";

    private readonly Dictionary<string, ModelEntry<TInput, TOutput>> _entries;
    private readonly Dictionary<string, MicroBatcher<TInput, TOutput>> _batchers = [];
    private readonly EarlyExitPoolOptions _options;
    private readonly ServingMetrics _metrics;
    // How errors after disposal name the pool.
    private static readonly string DisplayName = $"EarlyExitPredictionEnginePool<{typeof(TInput).Name}, {typeof(TOutput).Name}>";
    private int _disposed;

    internal EarlyExitPredictionEnginePool(IOptionsMonitor<EarlyExitPoolOptions> options, PoolRegistrations<TInput, TOutput> registrations,
        ServingMetrics metrics, ILoggerFactory? loggers = null, TimeProvider? clock = null)
    {
        _options = options.Get(PoolRegistrations<TInput, TOutput>.OptionsName);
        _options.Validate();
        _metrics = metrics;
        var logger = (loggers ?? NullLoggerFactory.Instance).CreateLogger<EarlyExitPredictionEnginePool<TInput, TOutput>>();
        if (registrations.Models.Count == 0)
            throw new InvalidOperationException("No model registered: call FromFile(...) on the builder returned by AddEarlyExitPredictionEnginePool.");
        _entries = [];
        try
        {
            foreach (var model in registrations.Models)
            {
                if (_entries.ContainsKey(model.Name)) throw new InvalidOperationException($"Model '{model.Name}' is registered twice.");
                var entry = new ModelEntry<TInput, TOutput>(model.Name, DisplayName, model.Path, model.WatchForChanges, _options, logger, metrics);
                _entries[model.Name] = entry;
                if (_options.Batching ?? BatchingPays(entry))
                    _batchers[model.Name] = new MicroBatcher<TInput, TOutput>(entry.DisplayName, DisplayName, _options, metrics, logger, clock ?? TimeProvider.System);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Micro-batching by default: on unless ONNX Runtime serves on the CPU (<see cref="EarlyExitPoolOptions.Batching"/>).</summary>
    /// <remarks>A model not loaded yet (<see cref="StartupLoadFailure.KeepRetrying"/>) is decided by the settings alone: on for a device named cuda.</remarks>
    private bool BatchingPays(ModelEntry<TInput, TOutput> entry) => ExecutionBackends.For(_options.Backend).BatchingPays(
        entry.Health().State == ModelState.Unavailable ? _options.Device : entry.Status().Device);

    /// <summary>The registered model names ("" is the default model).</summary>
    public IReadOnlyCollection<string> ModelNames => _entries.Keys;

    /// <summary>Predicts with the default model on the calling thread.</summary>
    public TOutput Predict(TInput input) => Predict(DefaultModelName, input);

    /// <summary>Predicts with a named model on the calling thread.</summary>
    public TOutput Predict(string modelName, TInput input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var entry = Entry(modelName);
        var generation = entry.Acquire();
        try
        {
            return PoolPrediction.Run(generation, entry.DisplayName, [input], _metrics)[0];
        }
        finally
        {
            generation.Release();
        }
    }

    /// <summary>Predicts a batch with a named model in one engine call.</summary>
    public TOutput[] Predict(string modelName, IReadOnlyList<TInput> inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var entry = Entry(modelName);
        var generation = entry.Acquire();
        try
        {
            return PoolPrediction.Run(generation, entry.DisplayName, inputs, _metrics);
        }
        finally
        {
            generation.Release();
        }
    }

    /// <summary>Predicts with the default model; concurrent calls are micro-batched when batching is on.</summary>
    public Task<TOutput> PredictAsync(TInput input, CancellationToken cancellation = default) => PredictAsync(DefaultModelName, input, cancellation);

    /// <summary>
    /// Predicts with a named model; concurrent calls are micro-batched when batching is on. Bad input and cancellation
    /// are reported through the task; an unknown model name or a disposed pool throws at once.
    /// </summary>
    public Task<TOutput> PredictAsync(string modelName, TInput input, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(input);
        var entry = Entry(modelName);
        if (cancellation.IsCancellationRequested) return Task.FromCanceled<TOutput>(cancellation);
        return PredictOn(entry, entry.Acquire(), input, cancellation);
    }

    /// <summary>
    /// Prepares an input for the model as it is now and predicts with that same model generation, even if a reload
    /// replaces the model in between: the input shape, normalisation and class names that <paramref name="prepare"/>
    /// receives (and the returned <see cref="ModelPrediction{TOutput}.Model"/> carries) are those of the generation that
    /// answers. Web handlers that decode images for the model's input size need this: a reload between decoding and
    /// predicting could otherwise feed one model's input to another.
    /// </summary>
    /// <param name="modelName">The model ("" for the default model).</param>
    /// <param name="prepare">Builds the input from the generation's status; its exceptions fault the returned task.</param>
    /// <param name="cancellation">Cancels the wait for a micro-batch.</param>
    public Task<ModelPrediction<TOutput>> PredictWithStatusAsync(string modelName, Func<ModelStatus, TInput> prepare, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(prepare);
        var entry = Entry(modelName);
        if (cancellation.IsCancellationRequested) return Task.FromCanceled<ModelPrediction<TOutput>>(cancellation);
        return PredictWithStatusOn(entry, entry.Acquire(), prepare, cancellation);
    }

    private async Task<ModelPrediction<TOutput>> PredictWithStatusOn(ModelEntry<TInput, TOutput> entry, ModelGeneration<TInput, TOutput> generation,
        Func<ModelStatus, TInput> prepare, CancellationToken cancellation)
    {
        ModelStatus status;
        TInput input;
        try
        {
            status = entry.Status(generation);
            input = prepare(status) ?? throw new InvalidOperationException("The prepare function returned no input.");
        }
        catch
        {
            generation.Release();
            throw;
        }
        return new ModelPrediction<TOutput>(status, await PredictOn(entry, generation, input, cancellation).ConfigureAwait(false));
    }

    /// <summary>Predicts on a generation the caller acquired; the reference is released when the prediction ends.</summary>
    private Task<TOutput> PredictOn(ModelEntry<TInput, TOutput> entry, ModelGeneration<TInput, TOutput> generation, TInput input, CancellationToken cancellation)
    {
        if (_batchers.TryGetValue(entry.Name, out var batcher)) return batcher.EnqueueAsync(input, generation, cancellation);
        try
        {
            return Task.FromResult(PoolPrediction.Run(generation, entry.DisplayName, [input], _metrics)[0]);
        }
        catch (Exception ex)
        {
            return Task.FromException<TOutput>(ex);
        }
        finally
        {
            generation.Release();
        }
    }

    /// <summary>
    /// A change token that fires when a new generation of the model starts serving (after a reload of its file). Take
    /// a new token after it fires, as with Microsoft.Extensions.ML's model loaders.
    /// </summary>
    public IChangeToken GetReloadToken(string modelName = DefaultModelName) => Entry(modelName).ReloadToken;

    /// <summary>The state of a model (generation, caches, reload failures).</summary>
    /// <exception cref="ModelUnavailableException">The model has no generation loaded yet (<see cref="StartupLoadFailure.KeepRetrying"/>); <see cref="GetHealth"/> says why.</exception>
    public ModelStatus GetStatus(string modelName = DefaultModelName) => Entry(modelName).Status();

    /// <summary>
    /// A model's health: serving, degraded (the last reload failed and is retried, or the file is gone; the previous
    /// generation serves) or unavailable (nothing loaded yet), with the reason in words. Never throws for a registered model.
    /// </summary>
    public ModelHealth GetHealth(string modelName = DefaultModelName) => Entry(modelName).Health();

    /// <summary>
    /// Saves the model a name serves now, atomically: after online updates, the updated caches (with their base network).
    /// How replicas share an update: one saves to the file the others watch, and they hot-reload it (docs/online.md#replicas).
    /// </summary>
    public void SaveModel(string modelName, string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        Entry(modelName).Save(path);
    }

    /// <summary>The continuously updated caches of a model (null unless <see cref="EarlyExitPoolOptions.Online"/> is set and the model has caches).</summary>
    public Gati.MLNet.Online.OnlineCaches? GetOnlineCaches(string modelName = DefaultModelName) => Entry(modelName).Online;

    /// <summary>Reloads a model from its file now (also done automatically for watched files).</summary>
    public void Reload(string modelName = DefaultModelName) => Entry(modelName).Reload();

    /// <summary>Retired generations of a model that calls still hold (0 once reloads have drained).</summary>
    internal int RetiredGenerationsAlive(string modelName = DefaultModelName) => Entry(modelName).RetiredAlive;

    private ModelEntry<TInput, TOutput> Entry(string modelName)
    {
        ArgumentNullException.ThrowIfNull(modelName);
        if (Volatile.Read(ref _disposed) != 0) throw new ObjectDisposedException(DisplayName, "The prediction pool was disposed.");
        return _entries.TryGetValue(modelName, out var entry)
            ? entry
            : throw new ArgumentException($"No model named '{modelName}' (registered: {string.Join(", ", _entries.Keys.Select(k => k.Length == 0 ? "(default)" : k))}).", nameof(modelName));
    }

    /// <summary>
    /// Stops batching and releases every model (native memory included). Requests waiting for a micro-batch fail with an
    /// <see cref="ObjectDisposedException"/>; calls already running finish on the generation they hold.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var batcher in _batchers.Values) await batcher.DisposeAsync().ConfigureAwait(false);
        foreach (var entry in _entries.Values) entry.Dispose();
    }

    /// <inheritdoc/>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}

/// <summary>Runs one engine call on a held generation and records it (under the model's display name).</summary>
internal static class PoolPrediction
{
    public static TOutput[] Run<TInput, TOutput>(ModelGeneration<TInput, TOutput> generation, string model, IReadOnlyList<TInput> inputs, ServingMetrics metrics)
        where TInput : class where TOutput : class, new()
    {
        var start = Stopwatch.GetTimestamp();
        var (outputs, exits) = generation.Engine.PredictWithExits(inputs);
        metrics.RecordBatch(model, exits, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return outputs;
    }
}
