using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Gati.MLNet.Torch;

/// <summary>
/// The native mechanics of the numerics self-check: the check in this process or in a child process, oneDNN's
/// instruction-set cap, and libtorch's switch for its oneDNN kernels.
/// </summary>
internal sealed class OneDnnRuntime : INumericsRuntime
{
    private const string ProbeAssembly = "Gati.MLNet.NativeProbe.dll";
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromMinutes(2);

    // In dependency order: each is loaded by full path in the child, so later ones find the earlier by soname.
    private static readonly string[] NativeLibraries = ["libc10", "libtorch_cpu", "libc10_cuda", "libtorch_cuda", "libtorch", "libLibTorchSharp"];

    // Captured before Gati can set anything: only the user's own setting counts as theirs.
    private readonly string? _userInstructionSet = NullIfBlank(Environment.GetEnvironmentVariable(NativeNumerics.InstructionSetVariable))
        ?? NullIfBlank(Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA"));

    private readonly Lazy<(string Model, bool Avx)> _cpu = new(ReadCpu);

    public string? UserInstructionSet => _userInstructionSet;

    public string Cpu => _cpu.Value.Model;

    public bool CanCap => _cpu.Value.Avx;

    public IReadOnlyList<NumericsCaseResult> RunInProcess(IReadOnlyList<NumericsCase> cases) => NumericsCheck.Run(cases, NativeNumerics.Repeats);

    public void CapInstructionSet(string instructionSet)
    {
        // oneDNN reads the variable with getenv; .NET's SetEnvironmentVariable changes only .NET's own copy on Unix.
        if (!OperatingSystem.IsWindows() && SetEnv(NativeNumerics.InstructionSetVariable, instructionSet, 1) != 0)
            throw new InvalidOperationException($"setenv({NativeNumerics.InstructionSetVariable}) failed (errno {Marshal.GetLastPInvokeError()}).");
        Environment.SetEnvironmentVariable(NativeNumerics.InstructionSetVariable, instructionSet); // child processes inherit it
    }

    public bool TryDisableOneDnn()
    {
        // at::globalContext().setUserEnabledMkldnn(false), as torch.backends.mkldnn.enabled = False does in Python.
        // Only the Itanium C++ ABI (Linux, macOS) gives these exports predictable names.
        if (OperatingSystem.IsWindows() || LoadedLibrary("libtorch_cpu") is not { } path) return false;
        var library = NativeLibrary.Load(path);
        if (!NativeLibrary.TryGetExport(library, "_ZN2at13globalContextEv", out var globalContext)
            || !NativeLibrary.TryGetExport(library, "_ZN2at7Context20setUserEnabledMkldnnEb", out var setMkldnn))
            return false;
        var context = Marshal.GetDelegateForFunctionPointer<GlobalContextFunction>(globalContext)();
        Marshal.GetDelegateForFunctionPointer<SetFlagFunction>(setMkldnn)(context, false);
        if (NativeLibrary.TryGetExport(library, "_ZN2at7Context20setUserEnabledNNPACKEb", out var setNnpack))
            Marshal.GetDelegateForFunctionPointer<SetFlagFunction>(setNnpack)(context, false);
        return true;
    }

    /// <summary>The native libraries this process loaded (path, size, time): what a stored verdict is valid for.</summary>
    internal static string NativeIdentity() => string.Join("\n", NativeLibraries.Select(LoadedLibrary).OfType<string>().Select(path =>
    {
        var file = new FileInfo(path);
        return file.Exists ? string.Create(CultureInfo.InvariantCulture, $"{path} {file.Length} {file.LastWriteTimeUtc.Ticks}") : path;
    }));

    public IReadOnlyList<NumericsCaseResult>? RunInChild(IReadOnlyList<NumericsCase> cases, string? instructionSetCap)
    {
        if (!OperatingSystem.IsLinux()) return null;
        var assemblyDirectory = Path.GetDirectoryName(typeof(OneDnnRuntime).Assembly.Location);
        if (string.IsNullOrEmpty(assemblyDirectory)) return null; // single-file publish: no probe beside us
        var probe = Path.Combine(assemblyDirectory, ProbeAssembly);
        var host = FindDotnetHost();
        var libraries = NativeLibraries.Select(LoadedLibrary).OfType<string>().ToList();
        if (!File.Exists(probe) || host is null || !libraries.Any(l => l.EndsWith("libLibTorchSharp.so", StringComparison.Ordinal))) return null;

        var runtimeConfig = Path.Combine(Path.GetTempPath(), $"gati-native-probe-{Environment.ProcessId}-{Guid.NewGuid():N}.runtimeconfig.json");
        try
        {
            // The probe runs on this process's own runtime version, without a deps file: TorchSharp.dll sits beside it
            // and the native libraries are the ones this process loaded.
            File.WriteAllText(runtimeConfig, JsonSerializer.Serialize(new
            {
                runtimeOptions = new
                {
                    tfm = "net" + Environment.Version.ToString(2),
                    framework = new { name = "Microsoft.NETCore.App", version = Environment.Version.ToString(3) },
                    rollForward = "LatestPatch",
                },
            }));
            var start = new ProcessStartInfo(host)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var argument in new[] { "exec", "--runtimeconfig", runtimeConfig, probe }) start.ArgumentList.Add(argument);
            foreach (var library in libraries)
            {
                start.ArgumentList.Add("--preload");
                start.ArgumentList.Add(library);
            }
            start.ArgumentList.Add("--repeats");
            start.ArgumentList.Add(NativeNumerics.Repeats.ToString(CultureInfo.InvariantCulture));
            foreach (var c in cases) start.ArgumentList.Add(c.ToString());
            start.Environment.Remove(NativeNumerics.InstructionSetVariable);
            start.Environment.Remove("ONEDNN_MAX_CPU_ISA");
            if (instructionSetCap is not null) start.Environment[NativeNumerics.InstructionSetVariable] = instructionSetCap;

            using var process = Process.Start(start);
            if (process is null) return null;
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEndAsync();
            if (!process.WaitForExit(ProbeTimeout))
            {
                process.Kill(entireProcessTree: true);
                return null;
            }
            var lines = stdout.GetAwaiter().GetResult().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            _ = stderr.GetAwaiter().GetResult();
            if (process.ExitCode == 0) return ParseResults(lines, cases);
            // Killed by a signal (e.g. SIGSEGV in a kernel): that instruction set is unusable. Any other failure to
            // run says nothing about the kernels, so it counts as "no child".
            return process.ExitCode > 128
                ? cases.Select(c => new NumericsCaseResult(c, double.PositiveInfinity, $"child process (killed by signal {process.ExitCode - 128})")).ToList()
                : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return null;
        }
        finally
        {
            try { File.Delete(runtimeConfig); }
            catch (IOException) { }
        }
    }

    private static List<NumericsCaseResult>? ParseResults(string[] lines, IReadOnlyList<NumericsCase> cases)
    {
        var results = new List<NumericsCaseResult>();
        foreach (var line in lines.Where(l => l.StartsWith('{')))
        {
            using var json = JsonDocument.Parse(line);
            var root = json.RootElement;
            var error = root.GetProperty("error").GetDouble();
            results.Add(new NumericsCaseResult(NumericsCase.Parse(root.GetProperty("case").GetString()!),
                error < 0 ? double.PositiveInfinity : error, root.GetProperty("output").GetString()!));
        }
        return results.Count == cases.Count ? results : null;
    }

    /// <summary>The dotnet host that runs this process, or the one beside this runtime (null for self-contained apps).</summary>
    private static string? FindDotnetHost()
    {
        var name = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        if (Environment.ProcessPath is { } current && Path.GetFileName(current) == name) return current;
        var runtimeDirectory = RuntimeEnvironment.GetRuntimeDirectory(); // <root>/shared/Microsoft.NETCore.App/<version>/
        foreach (var root in new[] { Environment.GetEnvironmentVariable("DOTNET_ROOT"), Path.Combine(runtimeDirectory, "..", "..", "..") })
        {
            if (string.IsNullOrEmpty(root)) continue;
            var candidate = Path.GetFullPath(Path.Combine(root, name));
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>The full path of a loaded native library (from /proc/self/maps), or null.</summary>
    private static string? LoadedLibrary(string stem)
    {
        if (!OperatingSystem.IsLinux()) return null;
        var file = stem + ".so";
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                var slash = line.IndexOf('/', StringComparison.Ordinal);
                if (slash < 0) continue;
                var path = line[slash..];
                if (Path.GetFileName(path) == file) return path;
            }
        }
        catch (IOException)
        {
        }
        return null;
    }

    private static (string Model, bool Avx) ReadCpu()
    {
        var model = RuntimeInformation.ProcessArchitecture.ToString();
        var isa = "";
        if (OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo"))
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (line.StartsWith("model name", StringComparison.Ordinal)) model = line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
                if (line.StartsWith("flags", StringComparison.Ordinal))
                {
                    var flags = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
                    isa = flags.Contains("avx512f") ? "AVX-512" : flags.Contains("avx2") ? "AVX2" : flags.Contains("avx") ? "AVX" : "";
                    break;
                }
            }
        }
        else if (System.Runtime.Intrinsics.X86.Avx.IsSupported)
        {
            isa = System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? "AVX-512" : System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "AVX2" : "AVX";
        }
        return ($"{model} ({Environment.ProcessorCount} logical CPUs{(isa.Length > 0 ? ", " + isa : "")})", isa.Length > 0);
    }

    private static string? NullIfBlank(string? value) => string.IsNullOrWhiteSpace(value) ? null : value.Trim();

    [DllImport("libc", EntryPoint = "setenv", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int SetEnv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate IntPtr GlobalContextFunction();

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void SetFlagFunction(IntPtr context, [MarshalAs(UnmanagedType.I1)] bool value);
}
