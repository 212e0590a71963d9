using Gati.MLNet.Inference;
using Gati.MLNet.Torch;

namespace Gati.Extensions.ML;

/// <summary>
/// Settings of an <see cref="EarlyExitPredictionEnginePool{TInput, TOutput}"/>, usually bound from configuration
/// (e.g. the "Gati:Pool" section: <c>{ "Backend": "OnnxRuntime", "Device": "auto", "MaxBatchSize": 32, "ExitPrecisionTarget": 0.999 }</c>).
/// </summary>
public sealed class EarlyExitPoolOptions
{
    /// <summary>The runtime that serves: ONNX Runtime (the default) or TorchSharp (docs/serving.md#backends).</summary>
    public ExecutionBackend Backend { get; set; } = ExecutionBackend.OnnxRuntime;

    /// <summary>Where models run: auto, cpu, cuda or cuda:N.</summary>
    public string Device { get; set; } = DeviceOptions.Auto;

    /// <summary>ONNX Runtime: threads of calls with several inputs (null: follow the measured choice of <see cref="SingleGraphThreads"/>; see <see cref="EarlyExitEngineOptions.IntraOpThreads"/>).</summary>
    public int? IntraOpThreads { get; set; }

    /// <summary>ONNX Runtime: let pool threads spin between calls (see <see cref="EarlyExitEngineOptions.AllowSpinning"/>).</summary>
    public bool AllowSpinning { get; set; }

    /// <summary>ONNX Runtime: serve one-input batches with the single graph (see <see cref="EarlyExitEngineOptions.SingleGraphAtBatchOne"/>).</summary>
    public bool SingleGraphAtBatchOne { get; set; } = true;

    /// <summary>ONNX Runtime: threads of the single graph's calls (null: chosen by measurement on this machine; see <see cref="EarlyExitEngineOptions.SingleGraphThreads"/>).</summary>
    public int? SingleGraphThreads { get; set; }

    internal EarlyExitEngineOptions EngineOptions() => new()
    {
        Backend = Backend,
        Device = Device,
        IntraOpThreads = IntraOpThreads,
        AllowSpinning = AllowSpinning,
        SingleGraphAtBatchOne = SingleGraphAtBatchOne,
        SingleGraphThreads = SingleGraphThreads,
    };

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

    /// <summary>Re-threshold every cache for this exit precision (from the calibration curves saved in the model); null keeps the model's thresholds.</summary>
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

    internal void Validate()
    {
        DeviceOptions.Validate(Device, nameof(Device));
        EngineOptions().Validated();
        if (MaxBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(MaxBatchSize), MaxBatchSize, "Must be positive.");
        if (MaxBatchDelayMs is < 0 or > 60_000 || double.IsNaN(MaxBatchDelayMs))
            throw new ArgumentOutOfRangeException(nameof(MaxBatchDelayMs), MaxBatchDelayMs, "Must be from 0 to 60,000 (a minute).");
        if (ExitPrecisionTarget is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(ExitPrecisionTarget), ExitPrecisionTarget, "Must be in (0, 1].");
        if (ReloadDebounceMs < 0) throw new ArgumentOutOfRangeException(nameof(ReloadDebounceMs), ReloadDebounceMs, "Must be 0 or more.");
        Online?.Validate();
        if (ReloadAttempts < 1) throw new ArgumentOutOfRangeException(nameof(ReloadAttempts), ReloadAttempts, "Must be positive.");
    }
}
