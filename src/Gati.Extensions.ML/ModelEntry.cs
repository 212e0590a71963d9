using Gati.MLNet;
using Gati.MLNet.Inference;
using Gati.MLNet.Online;
using Gati.MLNet.Transforms;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Microsoft.ML;

namespace Gati.Extensions.ML;

/// <summary>
/// One named model: loads the file, serves the current generation, and — when watched — reloads it after the file
/// changes (change events coalesced over a quiet period). A load that fails, whatever the error, is counted, keeps the
/// old generation serving (or, at start-up with <see cref="StartupLoadFailure.KeepRetrying"/>, leaves the model
/// unavailable), and is tried again with back-off until one succeeds. With online caches, the updater's accepted
/// candidates become generations too; a reload of the file starts afresh.
/// </summary>
internal sealed class ModelEntry<TInput, TOutput> : IDisposable where TInput : class where TOutput : class, new()
{
    private readonly string _owner;
    private readonly EarlyExitPoolOptions _options;
    private readonly ILogger _logger;
    private readonly ServingMetrics _metrics;
    private readonly object _reloadGate = new();   // serialises reloads (long: a load happens under it)
    private readonly object _stateGate = new();    // guards _current swaps and the online caches (short)
    private readonly ModelGenerationLoader<TInput, TOutput> _loader;
    private readonly ReloadBackoff _backoff;
    private readonly ModelFileWatcher? _watcher;
    private readonly ModelHealthReport _health;
    private ModelGeneration<TInput, TOutput>? _current;
    private bool _disposed;
    // Cancelled (and replaced) each time a new generation starts serving: the reload token's source.
    private CancellationTokenSource _reloaded = new();
    private readonly List<ModelGeneration<TInput, TOutput>> _retired = [];
    private OnlineCaches? _online;
    private int _onlineUpdates;

    /// <param name="name">The model's name.</param>
    /// <param name="owner">The pool, as errors after its disposal name it.</param>
    /// <param name="path">The model file.</param>
    /// <param name="watchForChanges">Reload when the file changes.</param>
    /// <param name="options">Pool settings.</param>
    /// <param name="logger">Load and reload logging.</param>
    /// <param name="metrics">Reload counts.</param>
    public ModelEntry(string name, string owner, string path, bool watchForChanges, EarlyExitPoolOptions options, ILogger logger, ServingMetrics metrics)
    {
        Name = name;
        DisplayName = ModelNames.Display(name);
        _owner = owner;
        Path = System.IO.Path.GetFullPath(path);
        _options = options;
        _logger = logger;
        _metrics = metrics;
        _loader = new ModelGenerationLoader<TInput, TOutput>(DisplayName, Path, options, logger);
        _backoff = new ReloadBackoff(options, ReloadFromWatcher);
        _health = new ModelHealthReport(DisplayName, Path, _backoff, () => _watcher?.MissingSince);
        try
        {
            _current = _loader.Load();
        }
        catch (Exception ex) when (options.StartupLoadFailure == StartupLoadFailure.KeepRetrying)
        {
            // Unavailable until a load succeeds: tried again with back-off, and at once when a watched file changes.
            Failed(ex, "Loading");
        }
        catch (Exception ex)
        {
            _backoff.Dispose();
            _logger.LogCritical("Model '{Model}' could not be loaded from {Path}: {Reason}", DisplayName, Path, ex.Message);
            throw new InvalidOperationException($"Model '{DisplayName}' could not be loaded from {Path}: {ex.Message}", ex);
        }
        try
        {
            if (_current is not null) StartOnline(_current);
        }
        catch
        {
            _backoff.Dispose();
            _current!.Release();
            throw;
        }
        if (watchForChanges)
            _watcher = new ModelFileWatcher(Path, options.ReloadDebounceMs, ReloadFromWatcher, OnFileDeleted);
    }

    public string Name { get; }

    /// <summary>The name in logs, metrics and health ("default" for the default model).</summary>
    public string DisplayName { get; }

    public string Path { get; }

    /// <summary>The current generation, with a reference the caller must release.</summary>
    /// <exception cref="ModelUnavailableException">No generation was loaded yet (the message says why).</exception>
    public ModelGeneration<TInput, TOutput> Acquire()
    {
        while (true)
        {
            var generation = Volatile.Read(ref _current);
            if (generation is null)
            {
                if (Volatile.Read(ref _disposed)) throw new ObjectDisposedException(_owner, $"The prediction pool was disposed: model '{DisplayName}' no longer serves.");
                throw new ModelUnavailableException(_health.Unavailable(), NextRetryAt);
            }
            if (generation.TryAcquire()) return generation;
            // Retired and released between the read and the acquire: the next read sees its successor.
        }
    }

    private DateTimeOffset? NextRetryAt => _backoff.NextRetryAt;

    /// <summary>State, reason and what serves: answers even when no generation is loaded.</summary>
    public ModelHealth Health() => _health.Of(Volatile.Read(ref _current));

    /// <summary>Retired generations not yet disposed (calls still running on them).</summary>
    internal int RetiredAlive
    {
        get
        {
            lock (_retired) return _retired.Count(g => !g.IsDisposed);
        }
    }

    /// <summary>Fires when a new generation starts serving: a successful reload of the file or an accepted online update.</summary>
    public IChangeToken ReloadToken => new CancellationChangeToken(Volatile.Read(ref _reloaded).Token);

    public ModelStatus Status()
    {
        var generation = Acquire();
        try
        {
            return Status(generation);
        }
        finally
        {
            generation.Release();
        }
    }

    /// <summary>The status of a generation the caller holds.</summary>
    public ModelStatus Status(ModelGeneration<TInput, TOutput> generation)
    {
        var engine = generation.Engine;
        OnlineCaches? online;
        lock (_stateGate) online = _online;
        return new ModelStatus(Name, Path, generation.Number, generation.LoadedAt, engine.Caches.Select(c => c.Layer).ToArray(),
            engine.Device, _backoff.Failed, _backoff.LastError, engine.InputShape, engine.InputNormalization, engine.ClassNames,
            engine.BackendDescription, generation.Source, online is null ? null : OnlineCacheStatus.Of(online), _health.Warnings(generation));
    }

    /// <summary>Fires the reload token and hands out a fresh one (outside every lock: a callback may reload or read the status).</summary>
    private void AnnounceNewGeneration() =>
        // Not disposed: tokens handed out may still register callbacks.
        Interlocked.Exchange(ref _reloaded, new CancellationTokenSource()).Cancel();

    /// <summary>Loads the file now and swaps the new generation in; the old one is disposed once idle.</summary>
    public void Reload()
    {
        Reload(out var swapped);
        if (swapped) AnnounceNewGeneration();
    }

    private void Reload(out bool swapped)
    {
        swapped = false;
        lock (_reloadGate)
        {
            if (Volatile.Read(ref _disposed)) return;
            ModelGeneration<TInput, TOutput> next;
            try
            {
                next = _loader.LoadWithRetries();
            }
            catch (Exception ex)
            {
                // Whatever failed (a missing or half-written file, a corrupt ONNX graph that ONNX Runtime refuses, a bad
                // model): counted, visible in the status and health, and tried again with back-off.
                Failed(ex, "Reloading");
                return;
            }
            ModelGeneration<TInput, TOutput>? previous;
            OnlineCaches? stopped;
            lock (_stateGate)
            {
                if (Volatile.Read(ref _disposed))
                {
                    next.Release();
                    return;
                }
                // From here on, updates from the old file's online caches are refused (InstallUpdate checks the owner).
                stopped = _online;
                _online = null;
                previous = Interlocked.Exchange(ref _current, next);
            }
            swapped = true;
            _backoff.Succeeded();
            _watcher?.Found();
            _metrics.RecordReload(DisplayName, success: true);
            if (previous is null)
                _logger.LogInformation("Model '{Model}' generation {Generation} serves after {Failures} failed loads.", DisplayName, next.Number, _backoff.Failed);
            else
                _logger.LogInformation("Model '{Model}' generation {Generation} replaces generation {Previous}.", DisplayName, next.Number, previous.Number);
            // Stop the old updater before its generation can be disposed (it may be reading those caches).
            StopOnline(stopped);
            Retire(previous);
            try
            {
                StartOnline(next);
            }
            catch (Exception ex) when (ex is InvalidOperationException or ArgumentException or NotSupportedException)
            {
                _logger.LogError(ex, "Online caches for model '{Model}' generation {Generation} could not start; it serves its caches as loaded.", DisplayName, next.Number);
            }
        }
    }

    /// <summary>A load that failed: counted and reported, and the next attempt scheduled with back-off (called under the reload lock or from the constructor).</summary>
    private void Failed(Exception ex, string what)
    {
        var (failures, delay) = _backoff.Record(ex);
        _metrics.RecordReload(DisplayName, success: false);
        var serving = Volatile.Read(ref _current);
        if (serving is null)
            _logger.LogError(ex, "{What} model '{Model}' from {Path} failed ({Failures} failures); the model is unavailable; next attempt in {Delay:F1} s.",
                what, DisplayName, Path, failures, delay.TotalSeconds);
        else
            _logger.LogError(ex, "{What} model '{Model}' from {Path} failed ({Failures} failures); generation {Generation} keeps serving; next attempt in {Delay:F1} s.",
                what, DisplayName, Path, failures, serving.Number, delay.TotalSeconds);
        if (!Volatile.Read(ref _disposed)) _backoff.Schedule(delay);
    }

    /// <summary>Saves the model the current generation serves (a file reload or an online update), atomically.</summary>
    public void Save(string path)
    {
        var generation = Acquire();
        try
        {
            new MLContext(0).Gati().SaveModel(generation.Model, generation.InputSchema, path);
        }
        finally
        {
            generation.Release();
        }
    }

    /// <summary>The online caches of the current file generation, when enabled.</summary>
    public OnlineCaches? Online
    {
        get
        {
            lock (_stateGate) return _online;
        }
    }

    private void Retire(ModelGeneration<TInput, TOutput>? previous)
    {
        if (previous is null) return;
        lock (_retired)
        {
            _retired.RemoveAll(g => g.IsDisposed);
            _retired.Add(previous);
        }
        previous.Release();
    }

    private void StartOnline(ModelGeneration<TInput, TOutput> generation)
    {
        if (OnlineCachesStarter.Create(generation, DisplayName, _options, _metrics, _logger, InstallUpdate) is not { } online) return;
        var started = false;
        lock (_stateGate)
        {
            if (!Volatile.Read(ref _disposed) && ReferenceEquals(_current, generation))
            {
                _online = online;
                _metrics.TrackOnline(DisplayName, online);
                started = true;
            }
        }
        if (!started) online.Dispose(); // the generation was replaced or the entry disposed meanwhile
    }

    private void StopOnline(OnlineCaches? online)
    {
        if (online is null) return;
        _metrics.UntrackOnline(DisplayName, online);
        online.Dispose();
    }

    /// <summary>The updater accepted a candidate: serve it as a new generation (on the updater's thread).</summary>
    private void InstallUpdate(OnlineCaches owner, EarlyExitEngine engine, LearnedCachesTransformer model)
    {
        ModelGeneration<TInput, TOutput>? previous;
        ModelGeneration<TInput, TOutput> next;
        lock (_stateGate)
        {
            if (Volatile.Read(ref _disposed) || !ReferenceEquals(_online, owner) || _current is not { } current)
            {
                // A file reload or the pool's disposal overtook this update: drop it.
                engine.Dispose();
                model.Dispose();
                return;
            }
            var number = _loader.NextNumber();
            var source = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"online update {++_onlineUpdates}");
            next = new ModelGeneration<TInput, TOutput>(number, Path, model, current.InputSchema,
                new EarlyExitPredictionEngine<TInput, TOutput>(engine, model.ImageColumnName), source);
            previous = Interlocked.Exchange(ref _current, next);
        }
        Retire(previous);
        AnnounceNewGeneration();
        _logger.LogInformation("Model '{Model}' generation {Generation} ({Source}) replaces generation {Previous}.", DisplayName, next.Number, next.Source, previous?.Number);
    }

    private void OnFileDeleted() =>
        _logger.LogWarning("The file of model '{Model}', {Path}, was deleted; generation {Generation} keeps serving, but a restart would fail to load it.",
            DisplayName, Path, Volatile.Read(ref _current)?.Number);

    private void ReloadFromWatcher()
    {
        try
        {
            Reload();
        }
        catch (Exception ex)
        {
            // Reload reports every load failure itself; this is a fault after the swap (e.g. an event handler).
            _logger.LogError(ex, "Unexpected error reloading model '{Model}'.", DisplayName);
        }
    }

    public void Dispose()
    {
        OnlineCaches? online;
        lock (_stateGate)
        {
            if (Volatile.Read(ref _disposed)) return;
            Volatile.Write(ref _disposed, true);
            online = _online;
            _online = null;
        }
        _watcher?.Dispose();
        _backoff.Dispose();
        StopOnline(online);
        lock (_stateGate) Interlocked.Exchange(ref _current, null)?.Release();
    }
}
