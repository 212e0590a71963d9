using System.Diagnostics;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>Runs helper programs of the solution in fresh processes.</summary>
public static class Processes
{
    /// <summary>Path of a sibling project's built dll, in the same configuration as this test assembly.</summary>
    public static string SiblingAssembly(string project)
    {
        // AppContext.BaseDirectory = tests/<this>/bin/<Configuration>/<tfm>/
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var tfm = baseDir.Name;
        var configuration = baseDir.Parent!.Name;
        var testsDir = baseDir.Parent!.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(testsDir, project, "bin", configuration, tfm, project + ".dll");
        if (!File.Exists(path)) throw new FileNotFoundException($"Helper {project} is not built at {path}.", path);
        return path;
    }

    /// <summary>Runs <c>dotnet exec</c> on an assembly; returns exit code and combined output.</summary>
    public static (int ExitCode, string Output) RunDotnet(string assembly, IEnumerable<string> arguments, TimeSpan? timeout = null)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(assembly);
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{Path.GetFileName(assembly)} did not finish in time.");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }
}
