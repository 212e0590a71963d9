using System.Runtime.CompilerServices;
using Gati.MLNet.Torch;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>
/// Runs the native numerics check when a test assembly loads, before any test touches libtorch: tests scoring models
/// run in any order with tests that train, and oneDNN can be capped only before its first use in the process.
/// </summary>
internal static class NumericsSetup
{
#pragma warning disable CA2255 // a module initializer is exactly what is needed: first, once, before any test
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void PrepareForTraining() => NativeNumerics.PrepareForTraining();
}
