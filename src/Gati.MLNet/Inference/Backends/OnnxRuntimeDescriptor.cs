using Gati.MLNet.Models;
using Gati.MLNet.Onnx;

namespace Gati.MLNet.Inference.Backends;

/// <summary>ONNX Runtime: any base model (it runs the ONNX graph), CPU or CUDA, its own copy of the weights.</summary>
internal sealed class OnnxRuntimeDescriptor : BackendDescriptor
{
    public override ExecutionBackend Kind => ExecutionBackend.OnnxRuntime;

    public override string DisplayName => "ONNX Runtime";

    public override bool Supports(BaseModel model) => true;

    /// <summary>ONNX Runtime serves on its own device; TorchSharp then only holds the weights, so they stay on the CPU.</summary>
    public override string ResolveLoadDevice(string configuredDevice) => "cpu";

    /// <summary>On the CPU a session call at batch 1 is already cheap and concurrent calls run in parallel; on CUDA batches pay.</summary>
    public override bool BatchingPays(string device) => device.StartsWith("cuda", StringComparison.OrdinalIgnoreCase);

    public override bool RunsOnnxGraph => true;

    public override bool HasSingleGraph(EarlyExitEngineOptions options) => options.SingleGraphAtBatchOne;

    /// <summary>On CUDA the activations stay on the GPU between segments.</summary>
    public override bool ExposesActivations(string device) => device == "cpu";

    public override void Initialize(EarlyExitEngineOptions options) => OnnxRuntimeEnvironment.Initialize(options.OnnxThreading);

    public override IEarlyExitBackend Create(BaseModel baseModel, IReadOnlyList<LearnedCache> caches, EarlyExitEngineOptions options) =>
        OnnxRuntimeBackend.Create(baseModel, caches, options);

    public override SegmentTiming Timing(BaseModel baseModel, EarlyExitEngineOptions options) => new OnnxTiming(baseModel.Graph, options);

    private sealed class OnnxTiming(BaseGraph graph, EarlyExitEngineOptions options) : SegmentTiming
    {
        // The cache sessions run with the threads the engine's segment sessions get.
        private readonly int _threads = ThreadingChoice.For(graph, options).Threads;

        public override string Device => options.Device;

        public override double[] Parts(int batch, int runs) => OnnxRuntimeTiming.Parts(graph, batch, runs, options);

        public override double Cache(LearnedCache cache, int batch, int runs) => OnnxRuntimeTiming.Cache(cache, batch, runs, options, _threads);
    }
}
