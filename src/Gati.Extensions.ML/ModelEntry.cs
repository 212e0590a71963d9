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
public sealed record ModelStatus(string Name, string Path, int Generation, DateTimeOffset LoadedAt, IReadOnlyList<int> CacheLayers, string Device,
    int FailedReloads, string? LastError, Gati.MLNet.Models.TensorShape InputShape, Gati.MLNet.Data.ChannelNormalization? InputNormalization,
    IReadOnlyList<string> ClassNames, string Backend = "", string Source = "file", OnlineCacheStatus? Online = null);

/// <summary>
/// One named model: loads the file, serves the current generation, and — when watched — reloads it after the file
/// changes (change events coalesced over a quiet period; failed loads retried, then the old generation kept). With
/// online caches, the updater's accepted candidates become generations too; a reload of the file starts afresh.
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
    private ModelGeneration<TInput, TOutput>? _current;
    private int _generations;
    private int _failedReloads;
    private string? _lastError;
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
        _owner = owner;
        Path = System.IO.Path.GetFullPath(path);
        _options = options;
        _logger = logger;
        _metrics = metrics;
        _current = Load();
        try
        {
            StartOnline(_current);
        }
        catch
        {
            _current.Release();
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
            _watcher.EnableRaisingEvents = true;
        }
    }

    public string Name { get; }

    public string Path { get; }

    /// <summary>The current generation, with a reference the caller must release.</summary>
    public ModelGeneration<TInput, TOutput> Acquire()
    {
        while (true)
        {
            var generation = Volatile.Read(ref _current) ?? throw new ObjectDisposedException(_owner, $"The prediction pool was disposed: model '{Name}' no longer serves.");
            if (generation.TryAcquire()) return generation;
            // Retired and released between the read and the acquire: the next read sees its successor.
        }
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
            engine.BackendDescription, generation.Source, online is null ? null : OnlineCacheStatus.Of(online));
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
            catch (Exception ex) when (ex is IOException or InvalidDataException or InvalidOperationException or UnauthorizedAccessException or ArgumentException or FormatException)
            {
                Interlocked.Increment(ref _failedReloads);
                _lastError = ex.Message;
                _metrics.RecordReload(Name, success: false);
                _logger.LogError(ex, "Reloading model '{Model}' from {Path} failed; generation {Generation} keeps serving.", Name, Path, _current?.Number);
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
            _metrics.RecordReload(Name, success: true);
            _logger.LogInformation("Model '{Model}' generation {Generation} replaces generation {Previous}.", Name, next.Number, previous?.Number);
            // Stop the old updater before its generation can be disposed (it may be reading those caches).
            StopOnline(stopped);
            Retire(previous);
            try
            {
                StartOnline(next);
            }
            catch (Exception ex) when (ex is InvalidOperationException or ArgumentException or NotSupportedException)
            {
                _logger.LogError(ex, "Online caches for model '{Model}' generation {Generation} could not start; it serves its caches as loaded.", Name, next.Number);
            }
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
        var caches = Flatten(generation.Model).OfType<LearnedCachesTransformer>().LastOrDefault();
        if (caches is null || caches.Caches.Count == 0)
        {
            _logger.LogWarning("Model '{Model}' has no learned caches: online caches are off for it.", Name);
            return;
        }
        OnlineCaches? online = null;
        online = new OnlineCaches(caches, generation.Engine.Inner, _options.EngineOptions(), settings,
            (engine, model) => InstallUpdate(online!, engine, model));
        online.Sampler.Reacted += (_, reaction) =>
        {
            _metrics.RecordReaction(Name, reaction.Layer);
            _logger.LogWarning("Model '{Model}': cache on layer {Layer} threshold {Old} -> {New}: {Reason}", Name, reaction.Layer, reaction.OldThreshold,
                reaction.NewThreshold, reaction.Reason);
        };
        online.Updated += (_, outcome) =>
        {
            _metrics.RecordUpdate(Name, outcome);
            _logger.Log(outcome.Accepted ? LogLevel.Information : LogLevel.Debug, "Model '{Model}' online update {Number}: {Reason} ({Cpu:F1} s of CPU)",
                Name, outcome.Number, outcome.Reason, outcome.CpuSeconds);
        };
        var started = false;
        lock (_stateGate)
        {
            if (!Volatile.Read(ref _disposed) && ReferenceEquals(_current, generation))
            {
                _online = online;
                _metrics.TrackOnline(Name, online);
                started = true;
            }
        }
        if (!started) online.Dispose(); // the generation was replaced or the entry disposed meanwhile
    }

    private void StopOnline(OnlineCaches? online)
    {
        if (online is null) return;
        _metrics.UntrackOnline(Name, online);
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
        _logger.LogInformation("Model '{Model}' generation {Generation} ({Source}) replaces generation {Previous}.", Name, next.Number, next.Source, previous?.Number);
    }

    private void OnFileEvent(object sender, FileSystemEventArgs e)
    {
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
            _logger.LogError(ex, "Unexpected error reloading model '{Model}'.", Name);
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
                _logger.LogWarning("Loading model '{Model}' failed (attempt {Attempt} of {Attempts}): {Message}", Name, attempt, _options.ReloadAttempts, ex.Message);
                Thread.Sleep(TimeSpan.FromMilliseconds(Math.Min(2000, 100 * Math.Pow(2, attempt))));
            }
        }
    }

    private ModelGeneration<TInput, TOutput> Load()
    {
        var clock = Stopwatch.StartNew();
        var context = new MLContext(0);
        // ONNX Runtime serves on its own device; TorchSharp then only holds the weights, so they stay on the CPU.
        DeviceOptions.ConfigureContext(context, _options.Backend == ExecutionBackend.OnnxRuntime ? "cpu" : _options.Device);
        var model = context.Gati().LoadModel(Path, out var inputSchema);
        try
        {
            if (_options.ExitPrecisionTarget is { } target) model = Rethreshold(model, target);
            var engine = context.Gati().CreateEarlyExitEngine<TInput, TOutput>(model, _options.EngineOptions());
            var number = Interlocked.Increment(ref _generations);
            _logger.LogInformation("Loaded model '{Model}' generation {Generation} from {Path} in {Milliseconds:F0} ms: caches on layers [{Layers}], {Backend}.",
                Name, number, Path, clock.Elapsed.TotalMilliseconds, string.Join(", ", engine.Caches.Select(c => c.Layer)), engine.BackendDescription);
            return new ModelGeneration<TInput, TOutput>(number, Path, model, inputSchema, engine);
        }
        catch
        {
            foreach (var component in Flatten(model)) (component as IDisposable)?.Dispose();
            throw;
        }
    }

    private static ITransformer Rethreshold(ITransformer model, double target)
    {
        var components = Flatten(model).ToList();
        var caches = components.OfType<LearnedCachesTransformer>().LastOrDefault();
        if (caches is null) return model;
        var rethresholded = caches.WithPrecisionTarget(target);
        components[components.IndexOf(caches)] = rethresholded;
        caches.Dispose();
        return new TransformerChain<ITransformer>(components.ToArray());
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : [model];

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
        StopOnline(online);
        lock (_stateGate) Interlocked.Exchange(ref _current, null)?.Release();
    }
}
