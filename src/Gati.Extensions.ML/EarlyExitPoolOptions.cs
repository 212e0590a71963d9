using System.ComponentModel;
using Gati.MLNet.Inference;

namespace Gati.Extensions.ML;

/// <summary>
/// Settings of an <see cref="EarlyExitPredictionEnginePool{TInput, TOutput}"/>, usually bound from configuration
/// (e.g. the "Gati:Pool" section: <c>{ "Backend": "OnnxRuntime", "Device": "auto", "Engine": { "SingleGraphThreads": 2 }, "ExitPrecisionTarget": 0.999 }</c>).
/// </summary>
public sealed class EarlyExitPoolOptions
{
    /// <summary>
    /// How each model's engine runs: backend, device and the ONNX Runtime settings (threads, spinning, the single graph at
    /// batch 1); bound from configuration as e.g. <c>"Engine": { "SingleGraphThreads": 2 }</c>. Every engine option is set
    /// here, where <see cref="EarlyExitEngineOptions"/> documents it; the pool copies it for each model it loads.
    /// </summary>
    public EarlyExitEngineOptions Engine { get; set; } = new();

    /// <summary>The runtime that serves: ONNX Runtime (the default) or TorchSharp (docs/serving.md#backends); the same as <c>Engine.Backend</c>.</summary>
    public ExecutionBackend Backend { get => Engine.Backend; set => Engine.Backend = value; }

    /// <summary>Where models run: auto, cpu, cuda or cuda:N; the same as <c>Engine.Device</c>.</summary>
    public string Device { get => Engine.Device; set => Engine.Device = value; }

    /// <summary>Kept for configurations written before <see cref="Engine"/>: sets <c>Engine.IntraOpThreads</c>.</summary>
    [Obsolete("Set Engine.IntraOpThreads (configuration: Gati:Pool:Engine:IntraOpThreads).")]
    [EditorBrowsable(EditorBrowsableState.Never)]
    public int? IntraOpThreads { get => Engine.IntraOpThreads; set => Engine.IntraOpThreads = value; }

    /// <summary>Kept for configurations written before <see cref="Engine"/>: sets <c>Engine.AllowSpinning</c>.</summary>
    [Obsolete("Set Engine.AllowSpinning (configuration: Gati:Pool:Engine:AllowSpinning).")]
    [EditorBrowsable(EditorBrowsableState.Never)]
    public bool AllowSpinning { get => Engine.AllowSpinning; set => Engine.AllowSpinning = value; }

    /// <summary>Kept for configurations written before <see cref="Engine"/>: sets <c>Engine.SingleGraphAtBatchOne</c>.</summary>
    [Obsolete("Set Engine.SingleGraphAtBatchOne (configuration: Gati:Pool:Engine:SingleGraphAtBatchOne).")]
    [EditorBrowsable(EditorBrowsableState.Never)]
    public bool SingleGraphAtBatchOne { get => Engine.SingleGraphAtBatchOne; set => Engine.SingleGraphAtBatchOne = value; }

    /// <summary>Kept for configurations written before <see cref="Engine"/>: sets <c>Engine.SingleGraphThreads</c>.</summary>
    [Obsolete("Set Engine.SingleGraphThreads (configuration: Gati:Pool:Engine:SingleGraphThreads).")]
    [EditorBrowsable(EditorBrowsableState.Never)]
    public int? SingleGraphThreads { get => Engine.SingleGraphThreads; set => Engine.SingleGraphThreads = value; }

    /// <summary>A copy of <see cref="Engine"/> for one model's engine (a later change of these options reaches the next load only).</summary>
    internal EarlyExitEngineOptions EngineOptions() => Engine.Clone();

    /// <summary>
    /// Gather concurrent <c>PredictAsync</c> calls into one engine batch (a lone request waits at most
    /// <see cref="MaxBatchDelayMs"/>). Null, the default, decides by what serves: on for TorchSharp and for CUDA, where
    /// one batched call costs far less than many single ones; off for ONNX Runtime on the CPU, where a batch-1 call
    /// (the single graph) costs less than the wait for company (docs/benchmarks.md#web-sample-under-load).
    /// </summary>
    public bool? Batching { get; set; }

    /// <summary>Largest micro-batch.</summary>
    public int MaxBatchSize { get; set; } = 32;

    /// <summary>
    /// How long the first request of a batch waits for company, in milliseconds (0: take only what is queued; at most
    /// 60,000). Counted from the request's arrival on the clock; the metric <c>gati.batch.wait</c> shows the real wait.
    /// </summary>
    public double MaxBatchDelayMs { get; set; } = 1;

    /// <summary>
    /// Re-threshold every cache for this exit precision (per exit, from the calibration curves saved in the model; the same
    /// promise as <c>TargetPrecision</c> at fitting time); null keeps the model's thresholds. Online caches then hold their
    /// own overall <c>AgreementTarget</c>.
    /// </summary>
    public double? ExitPrecisionTarget { get; set; }

    /// <summary>
    /// Continuously updated caches (docs/online.md): shadow sampling, live agreement with confidence bounds, threshold
    /// reactions and background updates that are swapped in as new generations. Null (the default) serves the caches as
    /// loaded. Bound from configuration as e.g. <c>"Online": { "SampleFraction": 0.1, "AgreementTarget": 0.99 }</c>.
    /// </summary>
    public Gati.MLNet.Online.OnlineCacheOptions? Online { get; set; }

    /// <summary>Quiet period after the last change event of a watched model file before it is reloaded, in milliseconds.</summary>
    public double ReloadDebounceMs { get; set; } = 300;

    /// <summary>Attempts to load a changed model file (e.g. while it is still being copied) before keeping the old model.</summary>
    public int ReloadAttempts { get; set; } = 5;

    /// <summary>
    /// What a model file that cannot be loaded when the pool is built does: <see cref="StartupLoadFailure.Throw"/> (the
    /// default) fails the pool's creation with the reason, so a host that builds the pool at start-up stops with it;
    /// <see cref="StartupLoadFailure.KeepRetrying"/> builds the pool anyway, with the model unavailable (its calls throw
    /// <see cref="ModelUnavailableException"/> naming the reason, <see cref="EarlyExitPredictionEnginePool{TInput, TOutput}.GetHealth"/>
    /// says why) and the load retried with back-off (<see cref="RetryDelayMs"/>) and whenever a watched file changes.
    /// </summary>
    public StartupLoadFailure StartupLoadFailure { get; set; } = StartupLoadFailure.Throw;

    /// <summary>
    /// After a failed load or reload, the wait before the next attempt, in milliseconds: this for the first failure,
    /// doubled after each further one, at most <see cref="MaxRetryDelayMs"/>. A change of a watched file tries at once.
    /// </summary>
    public double RetryDelayMs { get; set; } = 1000;

    /// <summary>The longest wait between attempts to load a model that keeps failing, in milliseconds.</summary>
    public double MaxRetryDelayMs { get; set; } = 60_000;

    internal void Validate()
    {
        if (Engine is null) throw new ArgumentNullException(nameof(Engine), "Engine options are required (the defaults: new EarlyExitEngineOptions()).");
        Engine.Validated();
        if (MaxBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(MaxBatchSize), MaxBatchSize, "Must be positive.");
        if (MaxBatchDelayMs is < 0 or > 60_000 || double.IsNaN(MaxBatchDelayMs))
            throw new ArgumentOutOfRangeException(nameof(MaxBatchDelayMs), MaxBatchDelayMs, "Must be from 0 to 60,000 (a minute).");
        if (ExitPrecisionTarget is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(ExitPrecisionTarget), ExitPrecisionTarget, "Must be in (0, 1].");
        if (ReloadDebounceMs < 0) throw new ArgumentOutOfRangeException(nameof(ReloadDebounceMs), ReloadDebounceMs, "Must be 0 or more.");
        Online?.Validate();
        if (ReloadAttempts < 1) throw new ArgumentOutOfRangeException(nameof(ReloadAttempts), ReloadAttempts, "Must be positive.");
        if (!Enum.IsDefined(StartupLoadFailure)) throw new ArgumentOutOfRangeException(nameof(StartupLoadFailure), StartupLoadFailure, "Throw or KeepRetrying.");
        if (RetryDelayMs is < 10 or > 3_600_000 || double.IsNaN(RetryDelayMs))
            throw new ArgumentOutOfRangeException(nameof(RetryDelayMs), RetryDelayMs, "Must be from 10 to 3,600,000 (an hour).");
        if (MaxRetryDelayMs < RetryDelayMs || MaxRetryDelayMs > 86_400_000 || double.IsNaN(MaxRetryDelayMs))
            throw new ArgumentOutOfRangeException(nameof(MaxRetryDelayMs), MaxRetryDelayMs, "Must be at least RetryDelayMs and at most 86,400,000 (a day).");
    }
}

/// <summary>What a pool does when a model cannot be loaded as it is built (<see cref="EarlyExitPoolOptions.StartupLoadFailure"/>).</summary>
public enum StartupLoadFailure
{
    /// <summary>The pool's creation fails with the reason (a host that builds the pool at start-up stops).</summary>
    Throw,

    /// <summary>The pool is built with the model unavailable; the load is retried with back-off and on file changes.</summary>
    KeepRetrying,
}
