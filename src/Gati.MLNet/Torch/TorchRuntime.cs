using System.Diagnostics;
using System.Runtime.InteropServices;
using TorchSharp;

namespace Gati.MLNet.Torch;

/// <summary>
/// Loads the native libtorch backend once per process and answers questions about it (CUDA present, device count).
/// </summary>
/// <remarks>
/// <para>Where libtorch comes from, in order:</para>
/// <list type="number">
/// <item><description>A folder named by <see cref="LibTorchDirectory"/> or the <c>GATI_LIBTORCH_DIR</c> environment
/// variable, e.g. a PyTorch install's <c>torch/lib</c> (this is how a CUDA libtorch is used where the
/// TorchSharp-cuda NuGet packages are unavailable).</description></item>
/// <item><description>The libtorch bundled with the application by the build's <c>TorchBackend</c> (cpu or cuda).</description></item>
/// <item><description>When nothing is bundled: the <c>torch/lib</c> folder of the <c>python3</c> on PATH, if it has PyTorch.</description></item>
/// </list>
/// <para>libtorch must be loaded from one folder only: loading <c>libtorch_cpu.so</c> twice aborts the process, so
/// naming an external folder in a build that bundles libtorch is an error.</para>
/// </remarks>
public static class TorchRuntime
{
    /// <summary>The environment variable naming an external libtorch folder.</summary>
    public const string LibTorchDirectoryVariable = "GATI_LIBTORCH_DIR";

    private static readonly object Gate = new();
    private static bool _initialized;
    private static string _source = "not loaded";
    private static string _kind = "not loaded";
    private static string? _libTorchDirectory;

    /// <summary>
    /// An external libtorch folder to load instead of a bundled one. Set it before the first use of TorchSharp;
    /// when null, <c>GATI_LIBTORCH_DIR</c> is consulted.
    /// </summary>
    public static string? LibTorchDirectory
    {
        get => _libTorchDirectory;
        set
        {
            lock (Gate)
            {
                if (_initialized && !string.Equals(value, _libTorchDirectory, StringComparison.Ordinal))
                    throw new InvalidOperationException("libtorch is already loaded in this process; set LibTorchDirectory before the first use of TorchSharp.");
                _libTorchDirectory = value;
            }
        }
    }

    /// <summary>Where libtorch was loaded from, with its folder on this machine (for diagnostics).</summary>
    public static string Source
    {
        get
        {
            EnsureInitialized();
            return _source;
        }
    }

    /// <summary>Which libtorch was loaded, without this machine's paths (for reports that are shared or committed).</summary>
    public static string Kind
    {
        get
        {
            EnsureInitialized();
            return _kind;
        }
    }

    /// <summary>True when the loaded libtorch has CUDA support and at least one GPU is visible.</summary>
    public static bool IsCudaAvailable
    {
        get
        {
            EnsureInitialized();
            return torch.cuda.is_available();
        }
    }

    /// <summary>Number of visible CUDA devices (0 without CUDA).</summary>
    public static int CudaDeviceCount
    {
        get
        {
            EnsureInitialized();
            return torch.cuda.is_available() ? torch.cuda.device_count() : 0;
        }
    }

    /// <summary>Loads libtorch if it is not loaded yet. Safe to call from any thread, any number of times.</summary>
    public static void EnsureInitialized()
    {
        if (Volatile.Read(ref _initialized)) return;
        lock (Gate)
        {
            if (_initialized) return;
            var external = _libTorchDirectory ?? NullIfEmpty(Environment.GetEnvironmentVariable(LibTorchDirectoryVariable));
            var bundled = FindBundledLibTorch();
            if (external is not null)
            {
                if (bundled is not null)
                    throw new InvalidOperationException(
                        $"An external libtorch folder was named ('{external}', via {nameof(LibTorchDirectory)} or {LibTorchDirectoryVariable}), " +
                        $"but this application also bundles libtorch ({bundled}). Loading libtorch from two folders aborts the process: " +
                        "build with -p:TorchBackend=none to use an external libtorch, or unset the variable.");
                PreloadFrom(external);
                _source = $"external libtorch at {external}";
                _kind = "external libtorch";
            }
            else if (bundled is not null)
            {
                _source = $"bundled libtorch at {bundled}";
                _kind = "bundled libtorch";
            }
            else
            {
                var discovered = DiscoverPythonTorchLib();
                if (discovered is null)
                    throw new InvalidOperationException(
                        "No libtorch found: this build bundles none (TorchBackend=none), " + LibTorchDirectoryVariable +
                        " is not set, and python3 on PATH has no PyTorch. Set " + LibTorchDirectoryVariable +
                        " to a folder holding libtorch.so (e.g. <site-packages>/torch/lib), or build with -p:TorchBackend=cpu.");
                PreloadFrom(discovered);
                _source = $"PyTorch's libtorch at {discovered}";
                _kind = "PyTorch's libtorch";
            }

            // Initialises TorchSharp's own native binding (libLibTorchSharp) and libtorch's CPU backend.
            var cudaPresent = HasCudaLibraries(external) || HasCudaLibraries(bundled);
            if (cudaPresent)
                torch.TryInitializeDeviceType(DeviceType.CUDA);
            else
                torch.InitializeDeviceType(DeviceType.CPU);
            Volatile.Write(ref _initialized, true);
        }
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;

    private static string LibraryName(string stem) =>
        OperatingSystem.IsWindows() ? stem + ".dll" : OperatingSystem.IsMacOS() ? "lib" + stem + ".dylib" : "lib" + stem + ".so";

    /// <summary>The folder of a libtorch shipped with the application (NuGet native assets), or null.</summary>
    internal static string? FindBundledLibTorch()
    {
        var appDir = AppContext.BaseDirectory;
        var name = LibraryName("torch_cpu");
        var rid = RuntimeInformation.RuntimeIdentifier;
        foreach (var dir in new[]
                 {
                     appDir,
                     Path.Combine(appDir, "runtimes", rid, "native"),
                     Path.Combine(appDir, "runtimes", RidFamily(), "native"),
                 })
        {
            if (File.Exists(Path.Combine(dir, name))) return dir;
        }
        return null;
    }

    private static string RidFamily() =>
        (OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux") + "-" +
        RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();

    private static bool HasCudaLibraries(string? dir) => dir is not null && File.Exists(Path.Combine(dir, LibraryName("torch_cuda")));

    private static void PreloadFrom(string directory)
    {
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"libtorch folder '{directory}' does not exist.");
        var main = Path.Combine(directory, LibraryName("torch"));
        if (!File.Exists(main))
            throw new FileNotFoundException($"libtorch folder '{directory}' holds no {LibraryName("torch")}.", main);
        // Load by full path in dependency order: libLibTorchSharp's own dependencies (libtorch, libc10, ...) are then
        // satisfied by these already-loaded libraries, matched by soname.
        foreach (var stem in new[] { "c10", "torch_cpu", "c10_cuda", "torch_cuda", "torch" })
        {
            var path = Path.Combine(directory, LibraryName(stem));
            if (File.Exists(path)) NativeLibrary.Load(path);
        }
    }

    private static string? DiscoverPythonTorchLib()
    {
        try
        {
            var start = new ProcessStartInfo("python3", "-c \"import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))\"")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            using var process = Process.Start(start);
            if (process is null) return null;
            var output = process.StandardOutput.ReadToEnd().Trim();
            if (!process.WaitForExit(60_000) || process.ExitCode != 0) return null;
            return Directory.Exists(output) ? output : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null; // no python3 on PATH
        }
    }
}
