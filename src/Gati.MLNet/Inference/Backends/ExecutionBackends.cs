namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// The one place that maps an <see cref="ExecutionBackend"/> to its implementation: engines, timing, capabilities and
/// device rules all come from the descriptor, so a new backend is one new descriptor here.
/// </summary>
internal static class ExecutionBackends
{
    private static readonly BackendDescriptor OnnxRuntime = new OnnxRuntimeDescriptor();
    private static readonly BackendDescriptor TorchSharp = new TorchSharpDescriptor();

    /// <summary>Every backend, ONNX Runtime (the default) first.</summary>
    public static IReadOnlyList<BackendDescriptor> All { get; } = [OnnxRuntime, TorchSharp];

    /// <summary>The descriptor of <paramref name="kind"/>.</summary>
    public static BackendDescriptor For(ExecutionBackend kind) => kind switch
    {
        ExecutionBackend.OnnxRuntime => OnnxRuntime,
        ExecutionBackend.TorchSharp => TorchSharp,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown execution backend."),
    };

    /// <summary>The backend that serves <paramref name="baseModel"/> with its own networks where it can (Transform's scoring), else the default.</summary>
    public static BackendDescriptor Native(Models.BaseModel baseModel) => TorchSharp.Supports(baseModel) ? TorchSharp : OnnxRuntime;

    /// <summary>The device TorchSharp loads the weights on for engines on <paramref name="options"/>' backend (ModelEntry, the CLI).</summary>
    public static string ResolveLoadDevice(EarlyExitEngineOptions options) => For(options.Backend).ResolveLoadDevice(options.Device);

    /// <summary>The device TorchSharp loads the weights on when serving <paramref name="backend"/> with <paramref name="configuredDevice"/>.</summary>
    public static string ResolveLoadDevice(ExecutionBackend backend, string configuredDevice) => For(backend).ResolveLoadDevice(configuredDevice);
}
