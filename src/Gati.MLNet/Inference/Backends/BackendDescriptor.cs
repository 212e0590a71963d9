using Gati.MLNet.Models;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// Everything the rest of Gati needs to know about one execution backend: how to build its engine seam, how to time
/// a base model's parts on it, what it can do and where it wants the weights. Obtained from
/// <see cref="ExecutionBackends.For"/>; nothing outside this folder decides by the backend's enum value.
/// </summary>
internal abstract class BackendDescriptor
{
    /// <summary>The option value that selects this backend.</summary>
    public abstract ExecutionBackend Kind { get; }

    /// <summary>For reports and console output, e.g. "ONNX Runtime".</summary>
    public abstract string DisplayName { get; }

    /// <summary>Whether it can serve <paramref name="model"/>.</summary>
    public abstract bool Supports(BaseModel model);

    /// <summary>Throws a NotSupportedException that names the backend to use instead when <paramref name="model"/> is not <see cref="Supports"/>ed.</summary>
    public void EnsureSupports(BaseModel model)
    {
        if (!Supports(model))
            throw new NotSupportedException($"The {DisplayName} backend runs Gati's own ResNets; {model.Description} is served by ONNX Runtime only (Backend = OnnxRuntime).");
    }

    /// <summary>
    /// The device the base model's TorchSharp weights are loaded on, from the configured one: a backend that runs its
    /// own copy of the network keeps them on the CPU.
    /// </summary>
    public abstract string ResolveLoadDevice(string configuredDevice);

    /// <summary>Whether micro-batching concurrent requests speeds this backend up on <paramref name="device"/> (the pool's default).</summary>
    public abstract bool BatchingPays(string device);

    /// <summary>Whether it runs the base model's exported ONNX graph, so that a plain ONNX Runtime session on that graph is the fair baseline to race.</summary>
    public abstract bool RunsOnnxGraph { get; }

    /// <summary>Whether a call of one input can run as one graph call (<see cref="IEarlyExitBackend.TryRunOne"/>) with these options.</summary>
    public abstract bool HasSingleGraph(EarlyExitEngineOptions options);

    /// <summary>Whether engines on <paramref name="device"/> can hand out the activations they computed (for engine observers).</summary>
    public abstract bool ExposesActivations(string device);

    /// <summary>Sets the process-wide state of the runtime from <paramref name="options"/> before anything else touches it.</summary>
    public virtual void Initialize(EarlyExitEngineOptions options)
    {
    }

    /// <summary>Builds the segments for <paramref name="baseModel"/> and its <paramref name="caches"/> (ordered by layer).</summary>
    public abstract IEarlyExitBackend Create(BaseModel baseModel, IReadOnlyList<LearnedCache> caches, EarlyExitEngineOptions options);

    /// <summary>A timer of <paramref name="baseModel"/>'s parts and of caches on it, as engines on this backend run them.</summary>
    public abstract SegmentTiming Timing(BaseModel baseModel, EarlyExitEngineOptions options);
}

/// <summary>Times the parts of one base model and caches on it, for latency models (the optimizer's, online caches').</summary>
internal abstract class SegmentTiming
{
    /// <summary>The device timed.</summary>
    public abstract string Device { get; }

    /// <summary>
    /// The base model's parts at <paramref name="batch"/> rows (median of <paramref name="runs"/>), ms: [p] for p &lt; L
    /// computes cut point p + 1 from cut point p (0: the input), [L] is the head.
    /// </summary>
    public abstract double[] Parts(int batch, int runs);

    /// <summary>One cache's lookup and exit decision at <paramref name="batch"/> rows, ms.</summary>
    public abstract double Cache(LearnedCache cache, int batch, int runs);
}
