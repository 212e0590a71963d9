using Gati.MLNet.Models;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// The whole early exit for one input as one graph (<see cref="EarlyExitSingleGraph"/>, CPU only): a session with the
/// threads the measurement chose, and, when that is several, one on a single thread for calls made while others run.
/// </summary>
internal sealed class OnnxSingleGraphSessions : IDisposable
{
    private static readonly string[] OutputNames = [OnnxSegment.Probabilities, EarlyExitSingleGraph.Exit];
    private readonly InferenceSession? _session;
    private readonly InferenceSession? _one;
    private readonly string[] _inputNames;
    private int _inFlight;

    public OnnxSingleGraphSessions(byte[] graph, int caches, string device, EarlyExitEngineOptions options, ThreadingChoice threading)
    {
        _inputNames = [OnnxSegment.Input, .. Enumerable.Range(0, caches).Select(EarlyExitSingleGraph.Threshold)];
        try
        {
            using var singleOptions = OnnxRuntimeSessions.Options(options, device, threading.Threads, singleGraph: true);
            _session = new InferenceSession(graph, singleOptions);
            if (threading.Threads > 1 && threading.Measured)
            {
                using var oneOptions = OnnxRuntimeSessions.Options(options, device, 1, singleGraph: true);
                _one = new InferenceSession(graph, oneOptions);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Runs the graph on bound inputs (the image, then one threshold per cache) and outputs (probabilities, exit).</summary>
    public void Run(RunOptions runOptions, OrtValue[] inputs, OrtValue[] outputs)
    {
        // Alone, a call uses the threads the measurement chose; while another call runs, one thread (no oversubscription).
        var concurrent = Interlocked.Increment(ref _inFlight) > 1;
        try
        {
            var session = concurrent && _one is { } one ? one : _session!;
            session.Run(runOptions, _inputNames, inputs, OutputNames, outputs);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    public void Dispose()
    {
        _session?.Dispose();
        _one?.Dispose();
    }
}
