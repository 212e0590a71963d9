using Gati.MLNet.Models;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// The whole early exit for one input as one graph (<see cref="EarlyExitSingleGraph"/>, CPU only): a session with the
/// threads the measurement chose, and, when that is several, one on a single thread for calls made while others run;
/// and, opened on first need, the tapped form for calls whose activations are kept (<see cref="PrepareTapped"/> opens it
/// ahead, makes every call alone take it, and closes the plain session once no call is left on it).
/// </summary>
internal sealed class OnnxSingleGraphSessions : IDisposable
{
    private static readonly string[] OutputNames = [OnnxSegment.Probabilities, EarlyExitSingleGraph.Exit];
    // The plain session at the chosen threads: closed (null) by PrepareTapped once the calls on it have ended.
    private InferenceSession? _session;
    private readonly InferenceSession? _one;
    private readonly string[] _inputNames;
    private readonly string[] _tappedOutputNames;
    private readonly int _caches;
    private readonly Lazy<InferenceSession> _tapped;
    // 1 after PrepareTapped: calls alone take the tapped session.
    private int _answerOnTapped;
    private int _inFlight;
    // Calls that chose the plain session and may still be running on it (PrepareTapped waits for none before closing it).
    private int _onPlain;

    /// <param name="graph">The single graph.</param>
    /// <param name="tappedGraph">Builds its tapped form (called once, on first need).</param>
    /// <param name="caches">Number of caches (one threshold input each).</param>
    /// <param name="device">Where it runs.</param>
    /// <param name="options">The engine's options.</param>
    /// <param name="threading">Threads per call, as measured or set.</param>
    public OnnxSingleGraphSessions(byte[] graph, Func<byte[]> tappedGraph, int caches, string device, EarlyExitEngineOptions options, ThreadingChoice threading)
    {
        _caches = caches;
        _inputNames = [OnnxSegment.Input, .. Enumerable.Range(0, caches).Select(EarlyExitSingleGraph.Threshold)];
        _tappedOutputNames = SingleGraphTaps.OutputNames(caches);
        _tapped = new Lazy<InferenceSession>(() =>
        {
            using var tappedOptions = OnnxRuntimeSessions.Options(options, device, threading.Threads, singleGraph: true);
            return new InferenceSession(tappedGraph(), tappedOptions);
        }, LazyThreadSafetyMode.ExecutionAndPublication);
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
            if (concurrent && _one is { } one)
            {
                one.Run(runOptions, _inputNames, inputs, OutputNames, outputs);
                return;
            }
            // After PrepareTapped (online caches copy some requests' activations), every call alone takes the tapped form, asking
            // only for the answer: one session, so the requests that keep their activations do not find its weights and
            // buffers cold after calls on the plain one. A call counts itself on the plain session before it reads the
            // switch, and PrepareTapped sets the switch before it waits for that count to reach zero (both full fences): a
            // call that still finds the switch off is waited for, so the plain session is never closed under one.
            if (Volatile.Read(ref _answerOnTapped) == 0)
            {
                Interlocked.Increment(ref _onPlain);
                try
                {
                    if (Volatile.Read(ref _answerOnTapped) == 0)
                    {
                        _session!.Run(runOptions, _inputNames, inputs, OutputNames, outputs);
                        return;
                    }
                }
                finally
                {
                    Interlocked.Decrement(ref _onPlain);
                }
            }
            _tapped.Value.Run(runOptions, _inputNames, inputs, OutputNames, outputs);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    /// <summary>Whether the plain session is still open (until <see cref="PrepareTapped"/> closes it).</summary>
    internal bool PlainSessionOpen => Volatile.Read(ref _session) is not null;

    /// <summary>
    /// Opens the tapped graph's session now (about as long as opening the single graph's), so no request waits for it, and
    /// from then on answers every call alone on it (<see cref="Run"/>): on the imported ResNet-18, requests that kept
    /// their activations on a session of their own cost 12.9 % more than static's at the same exits, on the one every
    /// request uses 0.7 % (docs/benchmarks.md). Then closes the plain session, once the calls already on it have ended:
    /// nothing takes it again, and it held a copy of the weights and its own buffers.
    /// </summary>
    public void PrepareTapped()
    {
        _ = _tapped.Value;
        Interlocked.Exchange(ref _answerOnTapped, 1);
        var wait = new SpinWait();
        while (Volatile.Read(ref _onPlain) != 0) wait.SpinOnce(sleep1Threshold: 20);
        Interlocked.Exchange(ref _session, null)?.Dispose();
    }

    /// <summary>
    /// Runs the tapped graph on bound inputs (the image, then one threshold per cache); its outputs, allocated by ONNX
    /// Runtime, are handed out with what each cache saw.
    /// </summary>
    public SingleGraphTaps RunTapped(RunOptions runOptions, OrtValue[] inputs) =>
        new(_tapped.Value.Run(runOptions, _inputNames, inputs, _tappedOutputNames), _caches);

    public void Dispose()
    {
        Interlocked.Exchange(ref _session, null)?.Dispose();
        _one?.Dispose();
        if (_tapped.IsValueCreated) _tapped.Value.Dispose();
    }
}
