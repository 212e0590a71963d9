using Gati.MLNet.Onnx;
using Gati.MLNet.Torch;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// How <see cref="OnnxRuntimeBackend"/> opens its sessions: which device ONNX Runtime runs on, the session options for
/// it, and the small graph that compacts an activation on CUDA.
/// </summary>
internal static class OnnxRuntimeSessions
{
    /// <summary>"cpu" or "cuda:N": ONNX Runtime's CUDA provider is used when asked for, or for auto when it is present.</summary>
    public static string ResolveDevice(string device)
    {
        var (kind, index) = DeviceOptions.Parse(device);
        var cudaAvailable = OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider");
        return kind switch
        {
            DeviceOptions.DeviceKind.Cpu => "cpu",
            DeviceOptions.DeviceKind.Auto => cudaAvailable ? "cuda:0" : "cpu",
            _ when cudaAvailable => $"cuda:{index ?? 0}",
            _ => throw new InvalidOperationException(
                $"Device '{device}' asks for CUDA, but this ONNX Runtime has no CUDA execution provider (providers: {string.Join(", ", OrtEnv.Instance().GetAvailableProviders())}). " +
                "Build with -p:OnnxRuntimeBackend=cuda (the Microsoft.ML.OnnxRuntime.Gpu.Linux package) on a machine with CUDA and cuDNN, or use device cpu."),
        };
    }

    public static bool IsCuda(string device) => device.StartsWith("cuda", StringComparison.Ordinal);

    public static int CudaIndex(string device) => int.Parse(device.AsSpan(5), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>A session on <paramref name="device"/> with <paramref name="threads"/>; the caller disposes the options once the session is open.</summary>
    public static SessionOptions Options(EarlyExitEngineOptions options, string device, int threads, bool singleGraph = false)
    {
        var session = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
        };
        try
        {
            if (singleGraph) OnnxRuntimeEnvironment.ConfigureSingleGraph(session, options.OnnxThreading, threads);
            else OnnxRuntimeEnvironment.Configure(session, options.OnnxThreading, threads);
            if (IsCuda(device))
                session.AppendExecutionProvider_CUDA(CudaIndex(device));
            return session;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>A graph that keeps the rows named by <c>Indices</c> of <c>Data</c> (the CUDA compaction).</summary>
    public static byte[] GatherRows(long[] dims)
    {
        var graph = new OnnxGraphBuilder("gati-compaction");
        var data = graph.Input("Data", global::Onnx.TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
        var indices = graph.Input("Indices", global::Onnx.TensorProto.Types.DataType.Int64, (long?)null);
        graph.Output(graph.Rename(graph.Node("Gather", [data, indices], ("axis", 0)), "Output"), global::Onnx.TensorProto.Types.DataType.Float,
            [null, .. dims.Select(d => (long?)d)]);
        return graph.ToBytes();
    }
}
