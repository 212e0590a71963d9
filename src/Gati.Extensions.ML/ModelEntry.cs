using System.Diagnostics;
using Gati.MLNet;
using Gati.MLNet.Inference;
using Gati.MLNet.Online;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.Extensions.ML;

/// <summary>The state of a named model in the pool.</summary>
/// <param name="Name">Model name ("" for the default model).</param>
/// <param name="Path">The model file.</param>
/// <param name="Generation">How many times the model has been loaded (1 after the first load).</param>
/// <param name="LoadedAt">When the current generation was loaded.</param>
/// <param name="CacheLayers">Layers of the caches the engine uses.</param>
/// <param name="Device">Where it runs.</param>
/// <param name="FailedReloads">Reloads that failed (the previous generation kept serving).</param>
/// <param name="LastError">The last reload error, if any.</param>
/// <param name="InputShape">[C, H, W] of the images the model reads.</param>
/// <param name="InputNormalization">Normalisation of the training images (to prepare raw pixels), when the model recorded it.</param>
/// <param name="ClassNames">Class names in label order.</param>
/// <param name="Backend">The runtime in words (e.g. "ONNX Runtime 1.31.1 (cpu, shared pool of 1 thread, one graph at batch 1 on the caller's thread)").</param>
/// <param name="Source">Where the current generation came from: "file", or "online update N".</param>
/// <param name="Online">Live agreement and updates when the pool runs continuously updated caches (<see cref="EarlyExitPoolOptions.Online"/>); else null.</param>
/// <param name="Warnings">Conditions that need attention but do not stop serving (see <see cref="ModelHealth.Warnings"/>); null reads as none.</param>
public sealed record ModelStatus(string Name, string Path, int Generation, DateTimeOffset LoadedAt, IReadOnlyList<int> CacheLayers, string Device,
    int FailedReloads, string? LastError, Gati.MLNet.Data.TensorShape InputShape, Gati.MLNet.Data.ChannelNormalization? InputNormalization,
    IReadOnlyList<string> ClassNames, string Backend = "", string Source = "file", OnlineCacheStatus? Online = null, IReadOnlyList<string>? Warnings = null);

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
    private readonly FileSystemWatcher? _watcher;
    private readonly Timer? _debounce;
    private readonly Timer _retry;
    private ModelGeneration<TInput, TOutput>? _current;
    private int _generations;
    private int _failedReloads;
    private string? _lastError;
    private int _consecutiveFailures;
    // UTC ticks (0: none), read by status calls on other threads: whole values, never torn.
    private long _nextRetryTicks;
    private long _fileMissingTicks;
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
        _retry = new Timer(_ => ReloadFromWatcher(), null, Timeout.Infinite, Timeout.Infinite);
        try
        {
            _current = Load();
        }
        catch (Exception ex) when (options.StartupLoadFailure == StartupLoadFailure.KeepRetrying)
        {
            // Unavailable until a load succeeds: tried again with back-off, and at once when a watched file changes.
            Failed(ex, "Loading");
        }
        catch (Exception ex)
        {
            _retry.Dispose();
            _logger.LogCritical("Model '{Model}' could not be loaded from {Path}: {Reason}", DisplayName, Path, ex.Message);
            throw new InvalidOperationException($"Model '{DisplayName}' could not be loaded from {Path}: {ex.Message}", ex);
        }
        try
        {
            if (_current is not null) StartOnline(_current);
        }
        catch
        {
            _retry.Dispose();
            _current!.Release();
            throw;
        }
        if (watchForChanges)
        {
            _debounce = new Timer(_ => ReloadFromWatcher(), null, Timeout.Infinite, Timeout.Infinite);
            _watcher = new FileSystemWatcher(System.IO.Path.GetDirectoryName(Path)!, System.IO.Path.GetFileName(Path))
            {
                NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
            };
            _watcher.Changed += OnFileEvent;
            _watcher.Created += OnFileEvent;
            _watcher.Renamed += OnFileEvent;
            _watcher.Deleted += OnFileEvent;
            _watcher.EnableRaisingEvents = true;
        }
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
                throw new ModelUnavailableException(Unavailable(), NextRetryAt);
            }
            if (generation.TryAcquire()) return generation;
            // Retired and released between the read and the acquire: the next read sees its successor.
        }
    }

    private DateTimeOffset? NextRetryAt
    {
        get => Ticks(ref _nextRetryTicks);
        set => Volatile.Write(ref _nextRetryTicks, value?.UtcTicks ?? 0);
    }

    private DateTimeOffset? FileMissingSince
    {
        get => Ticks(ref _fileMissingTicks);
        set => Volatile.Write(ref _fileMissingTicks, value?.UtcTicks ?? 0);
    }

    private static DateTimeOffset? Ticks(ref long field) => Volatile.Read(ref field) is var t && t != 0 ? new DateTimeOffset(t, TimeSpan.Zero) : null;

    private string Unavailable() =>
        $"Model '{DisplayName}' is not loaded: {_lastError ?? "its file could not be loaded"}{RetryText()}";

    private string RetryText() => NextRetryAt is { } at
        ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $" (attempt {_failedReloads} failed; next attempt at {at:HH:mm:ss} UTC)")
        : "";

    /// <summary>State, reason and what serves: answers even when no generation is loaded.</summary>
    public ModelHealth Health()
    {
        var generation = Volatile.Read(ref _current);
        var warnings = Warnings(generation);
        var failed = Volatile.Read(ref _failedReloads);
        var error = _lastError;
        var next = NextRetryAt;
        if (generation is null)
            return new ModelHealth(DisplayName, Path, ModelState.Unavailable, Unavailable(), 0, failed, error, next, warnings);
        if (error is not null)
            return new ModelHealth(DisplayName, Path, ModelState.Degraded,
                $"the last load of the file failed: {error}{RetryText()}; generation {generation.Number} keeps serving", generation.Number, failed, error, next, warnings);
        if (FileMissingSince is { } missing)
            return new ModelHealth(DisplayName, Path, ModelState.Degraded,
                string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"the model file was deleted at {missing:HH:mm:ss} UTC; generation {generation.Number} keeps serving, but a restart would fail"),
                generation.Number, failed, null, null, warnings);
        return new ModelHealth(DisplayName, Path, ModelState.Serving, $"model generation {generation.Number} loaded ({generation.Source})", generation.Number, failed,
            null, null, warnings);
    }

    private string[] Warnings(ModelGeneration<TInput, TOutput>? generation)
    {
        var warnings = new List<string>();
        if (generation is not null && !generation.IsDisposed && generation.Engine.Caches.Count == 0)
            warnings.Add("the model has no learned caches: every request runs the full base model");
        if (FileMissingSince is { } missing)
            warnings.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"the model file {Path} was deleted at {missing:O}"));
        return [.. warnings];
    }

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
            engine.Device, Volatile.Read(ref _failedReloads), _lastError, engine.InputShape, engine.InputNormalization, engine.ClassNames,
            engine.BackendDescription, generation.Source, online is null ? null : OnlineCacheStatus.Of(online), Warnings(generation));
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
                next = LoadWithRetries();
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
            _lastError = null;
            _consecutiveFailures = 0;
            NextRetryAt = null;
            FileMissingSince = null;
            try
            {
                _retry.Change(Timeout.Infinite, Timeout.Infinite);
            }
            catch (ObjectDisposedException)
            {
            }
            _metrics.RecordReload(DisplayName, success: true);
            if (previous is null)
                _logger.LogInformation("Model '{Model}' generation {Generation} serves after {Failures} failed loads.", DisplayName, next.Number, Volatile.Read(ref _failedReloads));
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
        var failures = Interlocked.Increment(ref _failedReloads);
        var consecutive = ++_consecutiveFailures;
        var delay = TimeSpan.FromMilliseconds(Math.Min(_options.MaxRetryDelayMs, _options.RetryDelayMs * Math.Pow(2, Math.Min(30, consecutive - 1))));
        _lastError = $"{ex.GetType().Name}: {ex.Message}";
        NextRetryAt = DateTimeOffset.UtcNow + delay;
        _metrics.RecordReload(DisplayName, success: false);
        var serving = Volatile.Read(ref _current);
        if (serving is null)
            _logger.LogError(ex, "{What} model '{Model}' from {Path} failed ({Failures} failures); the model is unavailable; next attempt in {Delay:F1} s.",
                what, DisplayName, Path, failures, delay.TotalSeconds);
        else
            _logger.LogError(ex, "{What} model '{Model}' from {Path} failed ({Failures} failures); generation {Generation} keeps serving; next attempt in {Delay:F1} s.",
                what, DisplayName, Path, failures, serving.Number, delay.TotalSeconds);
        try
        {
            if (!Volatile.Read(ref _disposed)) _retry.Change(delay, Timeout.InfiniteTimeSpan);
        }
        catch (ObjectDisposedException)
        {
            // Disposed meanwhile: nothing to retry for.
        }
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
        if (_options.Online is not { Enabled: true } settings) return;
        var caches = EarlyExitModel.Find(generation.Model)?.Caches;
        if (caches is null || caches.Caches.Count == 0)
        {
            _logger.LogWarning("Model '{Model}' has no learned caches: online caches are off for it.", DisplayName);
            return;
        }
        OnlineCaches? online = null;
        online = new OnlineCaches(caches, generation.Engine.Inner, _options.EngineOptions(), settings,
            (engine, model) => InstallUpdate(online!, engine, model));
        online.Sampler.Reacted += (_, reaction) =>
        {
            _metrics.RecordReaction(DisplayName, reaction.Layer);
            _logger.LogWarning("Model '{Model}': cache on layer {Layer} threshold {Old} -> {New}: {Reason}", DisplayName, reaction.Layer, reaction.OldThreshold,
                reaction.NewThreshold, reaction.Reason);
        };
        online.Updated += (_, outcome) =>
        {
            _metrics.RecordUpdate(DisplayName, outcome);
            _logger.Log(outcome.Accepted ? LogLevel.Information : LogLevel.Debug, "Model '{Model}' online update {Number}: {Reason} ({Cpu:F1} s of CPU)",
                DisplayName, outcome.Number, outcome.Reason, outcome.CpuSeconds);
        };
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
            var number = Interlocked.Increment(ref _generations);
            var source = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"online update {++_onlineUpdates}");
            next = new ModelGeneration<TInput, TOutput>(number, Path, model, current.InputSchema,
                new EarlyExitPredictionEngine<TInput, TOutput>(engine, model.ImageColumnName), source);
            previous = Interlocked.Exchange(ref _current, next);
        }
        Retire(previous);
        AnnounceNewGeneration();
        _logger.LogInformation("Model '{Model}' generation {Generation} ({Source}) replaces generation {Previous}.", DisplayName, next.Number, next.Source, previous?.Number);
    }

    private void OnFileEvent(object sender, FileSystemEventArgs e)
    {
        var gone = e.ChangeType == WatcherChangeTypes.Deleted
            || (e is RenamedEventArgs away && string.Equals(away.OldFullPath, Path, StringComparison.Ordinal) && !string.Equals(away.FullPath, Path, StringComparison.Ordinal));
        if (gone)
        {
            if (File.Exists(Path)) return;
            FileMissingSince = DateTimeOffset.UtcNow;
            _logger.LogWarning("The file of model '{Model}', {Path}, was deleted; generation {Generation} keeps serving, but a restart would fail to load it.",
                DisplayName, Path, Volatile.Read(ref _current)?.Number);
            return;
        }
        if (e is RenamedEventArgs renamed && !string.Equals(renamed.FullPath, Path, StringComparison.Ordinal)) return;
        // Editors and copies raise several events per change: wait for a quiet period, then reload once.
        _debounce?.Change(TimeSpan.FromMilliseconds(_options.ReloadDebounceMs), Timeout.InfiniteTimeSpan);
    }

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

    private ModelGeneration<TInput, TOutput> LoadWithRetries()
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return Load();
            }
            catch (Exception ex) when (attempt < _options.ReloadAttempts && ex is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                _logger.LogWarning("Loading model '{Model}' failed (attempt {Attempt} of {Attempts}): {Message}", DisplayName, attempt, _options.ReloadAttempts, ex.Message);
                Thread.Sleep(TimeSpan.FromMilliseconds(Math.Min(2000, 100 * Math.Pow(2, attempt))));
            }
        }
    }

    private ModelGeneration<TInput, TOutput> Load()
    {
        var clock = Stopwatch.StartNew();
        var context = new MLContext(0);
        // The backend decides where TorchSharp holds the weights (ONNX Runtime runs its own copy: the CPU).
        DeviceOptions.ConfigureContext(context, Gati.MLNet.Inference.Backends.ExecutionBackends.ResolveLoadDevice(_options.Backend, _options.Device));
        var model = context.Gati().LoadModel(Path, out var inputSchema);
        try
        {
            if (_options.ExitPrecisionTarget is { } target) model = Rethreshold(model, target);
            // Every ONNX Runtime session is created here, before the generation can be swapped in: a graph ONNX Runtime
            // refuses fails the load, not a request.
            var engine = context.Gati().CreateEarlyExitEngine<TInput, TOutput>(model, _options.EngineOptions());
            var number = Interlocked.Increment(ref _generations);
            _logger.LogInformation("Loaded model '{Model}' generation {Generation} from {Path} in {Milliseconds:F0} ms: caches on layers [{Layers}], {Backend}.",
                DisplayName, number, Path, clock.Elapsed.TotalMilliseconds, string.Join(", ", engine.Caches.Select(c => c.Layer)), engine.BackendDescription);
            if (engine.Caches.Count == 0)
                _logger.LogWarning("Model '{Model}' generation {Generation} has no learned caches: every request runs the full base model.", DisplayName, number);
            return new ModelGeneration<TInput, TOutput>(number, Path, model, inputSchema, engine);
        }
        catch
        {
            EarlyExitModel.DisposeComponents(model);
            throw;
        }
    }

    private static ITransformer Rethreshold(ITransformer model, double target)
    {
        if (EarlyExitModel.Find(model) is not { Caches: { } caches } parts) return model;
        var rethresholded = parts.Replacing(caches.WithPrecisionTarget(target));
        caches.Dispose();
        return rethresholded;
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
        _debounce?.Dispose();
        _retry.Dispose();
        StopOnline(online);
        lock (_stateGate) Interlocked.Exchange(ref _current, null)?.Release();
    }
}
