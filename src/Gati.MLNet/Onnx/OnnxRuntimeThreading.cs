namespace Gati.MLNet.Onnx;

/// <summary>
/// The engine options that shape ONNX Runtime's threads (<see cref="OnnxRuntimeEnvironment"/>), without the rest of
/// the engine's options, so that a base model's own sessions can share the environment too.
/// </summary>
/// <param name="IntraOpThreads">Threads of the shared pool, or null to follow the measured choice.</param>
/// <param name="AllowSpinning">Whether pool threads spin between calls.</param>
/// <param name="OnCallerThread">
/// Segment sessions with no pool at all: every operator runs on the thread that makes the call, so a background thread's
/// low priority covers all its work (online caches' shadow worker); a pool thread would run part of it at serving's priority.
/// </param>
internal readonly record struct OnnxRuntimeThreading(int? IntraOpThreads, bool AllowSpinning, bool OnCallerThread = false)
{
    /// <summary>The settings of default engine options: no thread count named, no spinning.</summary>
    public static OnnxRuntimeThreading Default => new(null, false);
}
