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
    /// Threads of ONNX Runtime's CPU thread pool, shared by every segment session of the process (calls with several
    /// inputs). Null means 1: every call runs on its caller's thread, and concurrent calls run in parallel on their own
    /// threads, which is what a server wants (with 2 pool threads, continuously updated caches served the phased stream
    /// of <c>gati bench workload</c> at 0.56 ms per request instead of 0.39 ms on the 2-core VM). Raise it for large batches on an otherwise idle machine
    /// (batch 64 there: 8.6 ms with 2 threads, 10.9 ms with 1). The pool is created with the first ONNX Runtime engine of
    /// the process; later values are ignored.
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
    /// Threads of the single graph's calls (<see cref="SingleGraphAtBatchOne"/>). 1, the default, runs a call on its
    /// caller's thread: for the narrow networks measured in docs/benchmarks.md, waking pool threads for every small
    /// operation costs more at batch 1 than splitting it saves, and concurrent requests still run in parallel on their
    /// own threads. More gives that session its own pool of this many threads (spinning as <see cref="AllowSpinning"/>
    /// says), which pays off for wide networks or large images.
    /// </summary>
    public int SingleGraphThreads { get; set; } = 1;

    internal EarlyExitEngineOptions Validated()
    {
        if (!Enum.IsDefined(Backend)) throw new ArgumentOutOfRangeException(nameof(Backend), Backend, "Unknown execution backend.");
        DeviceOptions.Validate(Device, nameof(Device));
        if (IntraOpThreads is < 1 or > 1024) throw new ArgumentOutOfRangeException(nameof(IntraOpThreads), IntraOpThreads, "Threads must be 1..1024 (or null for the CPU count).");
        if (SingleGraphThreads is < 1 or > 1024) throw new ArgumentOutOfRangeException(nameof(SingleGraphThreads), SingleGraphThreads, "Threads must be 1..1024.");
        return this;
    }
}
