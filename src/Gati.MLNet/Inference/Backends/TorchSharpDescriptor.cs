using Gati.MLNet.Models;

namespace Gati.MLNet.Inference.Backends;

/// <summary>TorchSharp: Gati's own ResNets only (the trained networks themselves), on the device they were loaded on.</summary>
internal sealed class TorchSharpDescriptor : BackendDescriptor
{
    public override ExecutionBackend Kind => ExecutionBackend.TorchSharp;

    public override string DisplayName => "TorchSharp";

    /// <summary>An imported ONNX model has no TorchSharp network to run.</summary>
    public override bool Supports(BaseModel model) => model is ResNetBaseModel;

    /// <summary>TorchSharp runs where the weights are: the configured device.</summary>
    public override string ResolveLoadDevice(string configuredDevice) => configuredDevice;

    /// <summary>Its cost is dispatch per operation, whatever the rows: batches pay on every device.</summary>
    public override bool BatchingPays(string device) => true;

    public override bool RunsOnnxGraph => false;

    public override bool HasSingleGraph(EarlyExitEngineOptions options) => false;

    /// <summary>Each activation is freed as soon as the next exists (and on CUDA it lives on the GPU).</summary>
    public override bool ExposesActivations(string device) => false;

    public override IEarlyExitBackend Create(BaseModel baseModel, IReadOnlyList<LearnedCache> caches, EarlyExitEngineOptions options)
    {
        EnsureSupports(baseModel);
        return new TorchSharpBackend((ResNetBaseModel)baseModel, caches);
    }

    public override SegmentTiming Timing(BaseModel baseModel, EarlyExitEngineOptions options)
    {
        EnsureSupports(baseModel);
        return new TorchSharpTiming((ResNetBaseModel)baseModel);
    }
}
