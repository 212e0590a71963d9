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
    /// Threads of ONNX Runtime's CPU thread pool, shared by every segment session of the process (null: the number of
    /// logical CPUs). The pool is created with the first ONNX Runtime engine of the process; later values are ignored.
    /// </summary>
    public int? IntraOpThreads { get; set; }

    /// <summary>
    /// Let ONNX Runtime's pool threads spin after a call instead of sleeping: lower latency when calls come back to
    /// back, but busy cores between calls (docs/benchmarks.md measures both). Decided with the pool, like
    /// <see cref="IntraOpThreads"/>.
    /// </summary>
    public bool AllowSpinning { get; set; }

    internal EarlyExitEngineOptions Validated()
    {
        if (!Enum.IsDefined(Backend)) throw new ArgumentOutOfRangeException(nameof(Backend), Backend, "Unknown execution backend.");
        DeviceOptions.Validate(Device, nameof(Device));
        if (IntraOpThreads is < 1 or > 1024) throw new ArgumentOutOfRangeException(nameof(IntraOpThreads), IntraOpThreads, "Threads must be 1..1024 (or null for the CPU count).");
        return this;
    }
}
