using Gati.MLNet.Onnx;
using Gati.MLNet.Torch;

namespace Gati.MLNet.Inference;

/// <summary>How an early-exit engine runs (see <see cref="GatiCatalog.CreateEarlyExitEngine{TInput, TOutput}(Microsoft.ML.ITransformer, EarlyExitEngineOptions)"/>).</summary>
public sealed class EarlyExitEngineOptions
{
    /// <summary>The runtime; ONNX Runtime unless set.</summary>
    public ExecutionBackend Backend { get; set; } = ExecutionBackend.OnnxRuntime;

    /// <summary>
    /// Where ONNX Runtime runs: <c>auto</c> (its CUDA execution provider when the GPU build of ONNX Runtime and CUDA are
    /// present, else the CPU), <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c> (an error without CUDA). The TorchSharp backend runs
    /// where the model was loaded (the MLContext's GpuDeviceId), whatever this says.
    /// </summary>
    public string Device { get; set; } = DeviceOptions.Auto;

    /// <summary>
    /// Threads of ONNX Runtime's CPU thread pool shared by every segment session of the process (calls with several
    /// inputs); the pool is created with the first ONNX Runtime engine of the process and later values are ignored. Null
    /// (the default) follows <see cref="SingleGraphThreads"/>' choice: one shared thread for a model that the measurement
    /// runs fastest on one thread (each call on its caller's thread, concurrent calls in parallel on theirs), otherwise that
    /// many threads per segment session, never spinning.
    /// </summary>
    public int? IntraOpThreads { get; set; }

    /// <summary>
    /// Let ONNX Runtime's pool threads spin after a call instead of sleeping: lower latency when calls come back to
    /// back, but busy cores between calls (docs/benchmarks.md measures both). Decided with the pool, like
    /// <see cref="IntraOpThreads"/>.
    /// </summary>
    public bool AllowSpinning { get; set; }

    /// <summary>
    /// ONNX Runtime on the CPU: serve a call with one input by a single graph that holds the exits as <c>If</c> nodes
    /// (one session call per input, blocks after a hit never run) instead of one session call per segment it reaches.
    /// Faster at batch 1 (docs/benchmarks.md#early-exit-engine); costs a second copy of the weights in memory. Calls
    /// with several inputs, inputs sampled by online caches (docs/online.md) and the CUDA provider run segment by
    /// segment.
    /// </summary>
    public bool SingleGraphAtBatchOne { get; set; } = true;

    /// <summary>
    /// Threads of the single graph's calls (<see cref="SingleGraphAtBatchOne"/>). Null (the default) chooses by measurement
    /// on this machine, once per base model and process: its whole graph at batch 1 on one thread against every core, every
    /// core kept when 15 % faster. Measured on the 2-core VM: a width-16 ResNet-18 on 28 x 28 images runs fastest on the
    /// caller's thread (waking pool threads costs more than splitting its small operations saves), the pretrained
    /// ResNet-18 at 224 x 224 twice as fast on 2 threads (docs/benchmarks.md). With several threads, a call made while
    /// another is running uses one thread, so concurrent requests do not oversubscribe the cores. A number fixes it.
    /// The engine's <c>BackendDescription</c> says which was used and why.
    /// </summary>
    public int? SingleGraphThreads { get; set; }

    /// <summary>Segment sessions run every operator on the calling thread (<see cref="ForBackgroundWork"/>).</summary>
    internal bool OnCallerThread { get; private init; }

    /// <summary>The settings that shape ONNX Runtime's threads.</summary>
    internal OnnxRuntimeThreading OnnxThreading => new(IntraOpThreads, AllowSpinning, OnCallerThread);

    /// <summary>A copy: holders such as the pool's options hand each engine its own.</summary>
    internal EarlyExitEngineOptions Clone() => (EarlyExitEngineOptions)MemberwiseClone();

    /// <summary>
    /// The options of an engine that a below-normal background thread calls on <paramref name="backend"/> and
    /// <paramref name="device"/> (the serving engine's, resolved): segment sessions only, all work on the calling thread,
    /// nothing measured.
    /// </summary>
    internal static EarlyExitEngineOptions ForBackgroundWork(ExecutionBackend backend, string device) => new()
    {
        Backend = backend,
        Device = device,
        SingleGraphAtBatchOne = false,
        SingleGraphThreads = 1,
        OnCallerThread = true,
    };

    internal EarlyExitEngineOptions Validated()
    {
        if (!Enum.IsDefined(Backend)) throw new ArgumentOutOfRangeException(nameof(Backend), Backend, "Unknown execution backend.");
        DeviceOptions.Validate(Device, nameof(Device));
        if (IntraOpThreads is < 1 or > 1024) throw new ArgumentOutOfRangeException(nameof(IntraOpThreads), IntraOpThreads, "Threads must be 1..1024 (or null to follow SingleGraphThreads' choice).");
        if (SingleGraphThreads is < 1 or > 1024) throw new ArgumentOutOfRangeException(nameof(SingleGraphThreads), SingleGraphThreads, "Threads must be 1..1024 (or null to measure).");
        return this;
    }
}
