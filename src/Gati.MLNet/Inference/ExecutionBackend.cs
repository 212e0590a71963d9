namespace Gati.MLNet.Inference;

/// <summary>The runtime that executes an early-exit engine (docs/serving.md#backends).</summary>
public enum ExecutionBackend
{
    /// <summary>
    /// ONNX Runtime (the default): the base model and its caches exported to ONNX segment graphs, one session per
    /// segment, CPU or CUDA. Several times faster than TorchSharp for small networks, whose cost is mostly dispatch.
    /// </summary>
    OnnxRuntime,

    /// <summary>TorchSharp: the networks as trained, block by block, on the device the model was loaded on.</summary>
    TorchSharp,
}
