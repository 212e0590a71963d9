using System.Diagnostics;
using Gati.MLNet;
using Gati.MLNet.Inference;
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
/// <param name="Backend">The runtime in words (e.g. "ONNX Runtime 1.31.1 (cpu, shared pool of 2 threads)").</param>
public sealed record ModelStatus(string Name, string Path, int Generation, DateTimeOffset LoadedAt, IReadOnlyList<int> CacheLayers, string Device,
    int FailedReloads, string? LastError, Gati.MLNet.Models.TensorShape InputShape, Gati.MLNet.Data.ChannelNormalization? InputNormalization,
    IReadOnlyList<string> ClassNames, string Backend = "");

/// <summary>
/// One named model: loads the file, serves the current generation, and — when watched — reloads it after the file
/// changes (change events coalesced over a quiet period; failed loads retried, then the old generation kept).
/// </summary>
internal sealed class ModelEntry<TInput, TOutput> : IDisposable where TInput : class where TOutput : class, new()
{
    private readonly string _owner;
    private readonly EarlyExitPoolOptions _options;
    private readonly ILogger _logger;
    private readonly ServingMetrics _metrics;
    private readonly object _reloadGate = new();
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

    /// <summary>Fires when a new generation starts serving (a successful reload).</summary>
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
        return new ModelStatus(Name, Path, generation.Number, generation.LoadedAt, engine.Caches.Select(c => c.Layer).ToArray(),
            engine.Device, Volatile.Read(ref _failedReloads), _lastError, engine.Config.InputShape, engine.InputNormalization, engine.ClassNames,
            engine.BackendDescription);
    }

    /// <summary>Loads the file now and swaps the new generation in; the old one is disposed once idle.</summary>
    public void Reload()
    {
        CancellationTokenSource fired;
        lock (_reloadGate)
        {
            if (_disposed) return;
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
            var previous = Interlocked.Exchange(ref _current, next);
            _lastError = null;
            if (previous is not null)
            {
                lock (_retired)
                {
                    _retired.RemoveAll(g => g.IsDisposed);
                    _retired.Add(previous);
                }
                previous.Release();
            }
            fired = Interlocked.Exchange(ref _reloaded, new CancellationTokenSource());
            _metrics.RecordReload(Name, success: true);
            _logger.LogInformation("Model '{Model}' generation {Generation} replaces generation {Previous}.", Name, next.Number, previous?.Number);
        }
        // Outside the lock: a callback may reload or read the status. Not disposed: tokens handed out may still register.
        fired.Cancel();
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
        var model = context.Gati().LoadModel(Path, out _);
        try
        {
            if (_options.ExitPrecisionTarget is { } target) model = Rethreshold(model, target);
            var engine = context.Gati().CreateEarlyExitEngine<TInput, TOutput>(model, _options.EngineOptions());
            var number = Interlocked.Increment(ref _generations);
            _logger.LogInformation("Loaded model '{Model}' generation {Generation} from {Path} in {Milliseconds:F0} ms: caches on layers [{Layers}], {Backend}.",
                Name, number, Path, clock.Elapsed.TotalMilliseconds, string.Join(", ", engine.Caches.Select(c => c.Layer)), engine.BackendDescription);
            return new ModelGeneration<TInput, TOutput>(number, Path, model, engine);
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
        lock (_reloadGate)
        {
            if (_disposed) return;
            _disposed = true;
        }
        _watcher?.Dispose();
        _debounce?.Dispose();
        Interlocked.Exchange(ref _current, null)?.Release();
    }
}
