using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Onnx;

/// <summary>
/// ONNX Runtime's process-wide environment as Gati uses it: one CPU thread pool shared by every session, so that
/// the several segment sessions of an engine (and several engines) do not each own threads that spin after every
/// call (8 sessions with 2 threads each on 2 cores gave a 12-33 ms p90 instead of 0.3 ms; shared notes).
/// </summary>
internal static class OnnxRuntimeEnvironment
{
    private static readonly object Gate = new();
    private static bool? _sharedPool;
    private static OrtThreadingOptions? _threading;

    /// <summary>Threads of the shared pool, or null when another component created ONNX Runtime's environment first.</summary>
    public static int? PoolThreads { get; private set; }

    /// <summary>Whether the shared pool's threads spin.</summary>
    public static bool Spinning { get; private set; }

    /// <summary>
    /// Applies the thread settings to a segment session (calls with several inputs): the shared pool when Gati created the
    /// environment and the options name its size or the measured choice is one thread; otherwise a pool of
    /// <paramref name="threads"/> of its own that never spins (a wide network whose calls gain from every core, or an
    /// environment created by another component such as ML.NET's ApplyOnnxModel).
    /// </summary>
    public static void Configure(SessionOptions session, OnnxRuntimeThreading options, int threads)
    {
        Initialize(options);
        if (options.OnCallerThread)
        {
            session.IntraOpNumThreads = 1;
            session.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        }
        else if (_sharedPool == true && (options.IntraOpThreads is not null || threads == 1))
        {
            session.DisablePerSessionThreads();
        }
        else
        {
            session.IntraOpNumThreads = options.IntraOpThreads ?? threads;
            session.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        }
    }

    /// <summary>
    /// Thread settings of the single graph's session (batch 1): its own pool of <paramref name="threads"/> threads (one:
    /// the caller's thread), spinning only where the options allow it.
    /// </summary>
    public static void ConfigureSingleGraph(SessionOptions session, OnnxRuntimeThreading options, int threads)
    {
        Initialize(options);
        session.IntraOpNumThreads = threads;
        session.AddSessionConfigEntry("session.intra_op.allow_spinning", options.AllowSpinning && threads > 1 ? "1" : "0");
    }

    /// <summary>
    /// Creates ONNX Runtime's environment with the shared pool unless it exists already. Must run before anything
    /// touches <see cref="OrtEnv.Instance"/> (even to list providers), which creates the environment without a pool.
    /// </summary>
    public static void Initialize(OnnxRuntimeThreading options)
    {
        lock (Gate)
        {
            if (_sharedPool is null)
            {
                if (!OrtEnv.IsCreated)
                {
                    var threads = options.IntraOpThreads ?? 1;
                    // Kept for the life of the process, as the environment that was created from it.
                    _threading = new OrtThreadingOptions
                    {
                        GlobalIntraOpNumThreads = threads,
                        GlobalInterOpNumThreads = 1,
                        GlobalSpinControl = options.AllowSpinning,
                    };
                    var creation = new EnvironmentCreationOptions { logId = "gati", logLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING, threadOptions = _threading };
                    OrtEnv.CreateInstanceWithOptions(ref creation);
                    _sharedPool = true;
                    PoolThreads = threads;
                    Spinning = options.AllowSpinning;
                }
                else
                {
                    _sharedPool = false;
                }
            }
        }
    }
}
