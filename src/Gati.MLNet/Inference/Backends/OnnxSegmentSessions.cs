using Gati.MLNet.Models;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// The segments' sessions of an <see cref="OnnxRuntimeBackend"/> and the shapes its calls bind: one session per segment
/// (each cache segment fused with its cache), and on CUDA one compaction session per cache segment.
/// </summary>
internal sealed class OnnxSegmentSessions : IDisposable
{
    public OnnxSegmentSessions(IReadOnlyList<OnnxSegment> segments, BaseGraph baseGraph, string device, EarlyExitEngineOptions options, int threads)
    {
        Classes = baseGraph.ClassCount;
        InputDims = new long[segments.Count][];
        ActivationDims = new long[segments.Count][];
        InputSizes = new int[segments.Count];
        OutputNames = new string[segments.Count][];
        Sessions = new InferenceSession[segments.Count];
        Gathers = new InferenceSession?[segments.Count];
        var cuda = OnnxRuntimeSessions.IsCuda(device);
        if (cuda)
            CudaMemory = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, OnnxRuntimeSessions.CudaIndex(device), OrtMemType.Default);
        try
        {
            var from = 0;
            for (var s = 0; s < segments.Count; s++)
            {
                var segment = segments[s];
                InputDims[s] = baseGraph.DimsAt(from);
                InputSizes[s] = checked((int)InputDims[s].Aggregate(1L, (a, b) => a * b));
                if (!segment.IsFinal)
                {
                    ActivationDims[s] = baseGraph.DimsAt(segment.LastLayer);
                    OutputNames[s] = [OnnxSegment.Activation, OnnxSegment.Probabilities, OnnxSegment.Hit, OnnxSegment.HitProbability];
                    from = segment.LastLayer;
                }
                else
                {
                    OutputNames[s] = [OnnxSegment.Probabilities];
                }
                using var sessionOptions = OnnxRuntimeSessions.Options(options, device, threads);
                Sessions[s] = new InferenceSession(segment.Model, sessionOptions);
                if (cuda && !segment.IsFinal)
                {
                    using var gatherOptions = OnnxRuntimeSessions.Options(options, device, threads);
                    Gathers[s] = new InferenceSession(OnnxRuntimeSessions.GatherRows(ActivationDims[s]), gatherOptions);
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public InferenceSession[] Sessions { get; }

    /// <summary>Per segment, its input's dimensions without the batch dimension.</summary>
    public long[][] InputDims { get; }

    /// <summary>Per cache segment, its output activation's dimensions without the batch dimension (null for the final segment).</summary>
    public long[][] ActivationDims { get; }

    public int[] InputSizes { get; }

    public int Classes { get; }

    public string[][] OutputNames { get; }

    /// <summary>CUDA only: per cache segment, the compaction of its activation.</summary>
    public InferenceSession?[] Gathers { get; }

    /// <summary>CUDA only: where activations stay between segments.</summary>
    public OrtMemoryInfo? CudaMemory { get; }

    public int Count => Sessions.Length;

    public void Dispose()
    {
        foreach (var session in Sessions) session?.Dispose();
        foreach (var session in Gathers) session?.Dispose();
        CudaMemory?.Dispose();
    }
}
