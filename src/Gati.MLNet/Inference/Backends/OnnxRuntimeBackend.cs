using System.Collections.Concurrent;
using Gati.MLNet.Models;
using Gati.MLNet.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// Runs the segments on ONNX Runtime: one session per segment, each fusing its blocks with its cache's predictor and
/// selector, so one session call gives the activation, the probabilities and the hit flags. Concurrent calls run in
/// parallel (sessions are thread-safe); each call rents a context whose buffers and tensor views are reused, so the
/// hot path allocates nothing but the result. On the CPU, compaction moves the surviving rows within the activation
/// buffer, which is the next segment's input. On CUDA, activations stay on the GPU between segments (IO binding),
/// compaction is a Gather on the GPU, and only the probabilities and hit flags are copied to the host.
/// </summary>
internal sealed class OnnxRuntimeBackend : IEarlyExitBackend
{
    private readonly ConcurrentBag<IPooledOnnxCall> _idle = new();
    private int _disposed;

    private OnnxRuntimeBackend(IReadOnlyList<OnnxSegment> segments, byte[]? single, Func<byte[]> tapped, BaseGraph baseGraph, IReadOnlyList<int> cacheLayers, string device,
        EarlyExitEngineOptions options, ThreadingChoice threading)
    {
        CacheLayers = cacheLayers;
        Device = device;
        Segments = new OnnxSegmentSessions(segments, baseGraph, device, options, threading.Threads);
        try
        {
            if (single is not null && !OnnxRuntimeSessions.IsCuda(device))
                SingleGraph = new OnnxSingleGraphSessions(single, tapped, cacheLayers.Count, device, options, threading);
        }
        catch
        {
            Dispose();
            throw;
        }
        var segmentThreads = options.OnCallerThread ? "every call on its caller's thread"
            : OnnxRuntimeEnvironment.PoolThreads is { } pool && (options.IntraOpThreads is not null || threading.Threads == 1)
            ? $"shared pool of {pool} thread{(pool == 1 ? "" : "s")}{(OnnxRuntimeEnvironment.Spinning ? ", spinning" : "")}"
            : $"{options.IntraOpThreads ?? threading.Threads} thread{((options.IntraOpThreads ?? threading.Threads) == 1 ? "" : "s")} per segment session";
        Description = $"ONNX Runtime {OrtEnv.Instance().GetVersionString()} ({device}, {segmentThreads}" +
            (SingleGraph is null ? ")" : $", one graph at batch 1: {threading.Describe()})");
    }

    /// <summary>
    /// Cuts the base model's ONNX graph into one segment per cache (with the cache's graph fused in) and a final one, builds
    /// the single graph for batch 1 on the CPU, and opens a session for each. Nothing here needs TorchSharp: the base
    /// graph and the caches' graphs are what a model zip stores.
    /// </summary>
    public static OnnxRuntimeBackend Create(BaseModel baseModel, IReadOnlyList<LearnedCache> caches, EarlyExitEngineOptions options)
    {
        OnnxRuntimeEnvironment.Initialize(options.OnnxThreading); // before ResolveDevice asks OrtEnv for its providers
        var device = OnnxRuntimeSessions.ResolveDevice(options.Device);
        var baseGraph = baseModel.Graph;
        var cacheGraphs = caches.Select(c => CacheGraph.Parse(c.Layer, c.Graph)).ToArray();
        var segments = EarlyExitOnnx.Segments(baseGraph, cacheGraphs);
        var single = options.SingleGraphAtBatchOne && device == "cpu" ? EarlyExitSingleGraph.Build(baseGraph, cacheGraphs) : null;
        var threading = device == "cpu" ? ThreadingChoice.For(baseGraph, options) : ThreadingChoice.Fixed(1);
        return new OnnxRuntimeBackend(segments, single, () => EarlyExitSingleGraph.Build(baseGraph, cacheGraphs, tapped: true), baseGraph, caches.Select(c => c.Layer).ToArray(), device, options, threading);
    }

    public string Description { get; }

    public string Device { get; }

    /// <summary>The cache layer that ends each segment but the last, ascending (checks the single graph's answers).</summary>
    internal IReadOnlyList<int> CacheLayers { get; }

    /// <summary>The segments' sessions and the shapes a call binds.</summary>
    internal OnnxSegmentSessions Segments { get; }

    /// <summary>CPU only, when enabled: the whole early exit for one input as one graph.</summary>
    internal OnnxSingleGraphSessions? SingleGraph { get; }

    public IEarlyExitCall Begin(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var call = _idle.TryTake(out var idle) ? idle : Segments.CudaMemory is null ? new OnnxSegmentCall(this) : new OnnxCudaSegmentCall(this);
        call.Load(segment, inputs, count, thresholds);
        return call;
    }

    public bool TryRunOne(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit)
    {
        exit = -1;
        if (SingleGraph is null) return false;
        using var call = RentSingleGraphCall();
        exit = call.RunOne(image, thresholds, probabilities);
        return true;
    }

    public bool PrepareTapped()
    {
        if (SingleGraph is null) return false;
        SingleGraph.PrepareTapped();
        return true;
    }

    public SingleGraphTaps? TryRunOneTapped(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit)
    {
        exit = -1;
        if (SingleGraph is null) return null;
        using var call = RentSingleGraphCall();
        return call.RunOneTapped(image, thresholds, probabilities, out exit);
    }

    /// <summary>A pooled CPU call for the single graph (its bound inputs and outputs are reused); back to the pool when disposed.</summary>
    private OnnxSegmentCall RentSingleGraphCall()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return (OnnxSegmentCall)(_idle.TryTake(out var idle) ? idle : new OnnxSegmentCall(this));
    }

    /// <summary>A call that ended: back to the pool, or freed when the backend is disposed.</summary>
    internal void Return(IPooledOnnxCall call)
    {
        if (_disposed != 0) call.Release();
        else _idle.Add(call);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        while (_idle.TryTake(out var call)) call.Release();
        Segments.Dispose();
        SingleGraph?.Dispose();
    }
}
