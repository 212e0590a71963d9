namespace Gati.MLNet.Onnx;

/// <summary>
/// The engine options that shape ONNX Runtime's threads (<see cref="OnnxRuntimeEnvironment"/>), without the rest of
/// the engine's options, so that a base model's own sessions can share the environment too.
/// </summary>
/// <param name="IntraOpThreads">Threads of the shared pool, or null to follow the measured choice.</param>
/// <param name="AllowSpinning">Whether pool threads spin between calls.</param>
internal readonly record struct OnnxRuntimeThreading(int? IntraOpThreads, bool AllowSpinning)
{
    /// <summary>The settings of default engine options: no thread count named, no spinning.</summary>
    public static OnnxRuntimeThreading Default => new(null, false);
}
