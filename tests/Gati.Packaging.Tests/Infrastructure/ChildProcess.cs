using System.Diagnostics;
using System.Text;

namespace Gati.Packaging.Tests.Infrastructure;

/// <summary>Runs a program to completion and captures its output (stdout and stderr, interleaved as they arrive).</summary>
public static class ChildProcess
{
    /// <summary>The dotnet host that runs these tests.</summary>
    public static string Dotnet => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";

    /// <summary>Runs <paramref name="fileName"/>; throws on timeout, returns the exit code and output otherwise.</summary>
    /// <param name="fileName">The program.</param>
    /// <param name="arguments">Its arguments, passed as they are (no shell).</param>
    /// <param name="workingDirectory">Its working directory.</param>
    /// <param name="timeout">How long it may run before it and its children are killed.</param>
    /// <param name="environment">Variables to set (a null value removes the variable).</param>
    public static ChildProcessResult Run(string fileName, IEnumerable<string> arguments, string workingDirectory, TimeSpan timeout,
        IReadOnlyDictionary<string, string?>? environment = null)
    {
        var start = new ProcessStartInfo(fileName)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value is null) start.Environment.Remove(name);
            else start.Environment[name] = value;
        }
        var commandLine = $"{Path.GetFileName(fileName)} {string.Join(' ', start.ArgumentList)}";

        var output = new StringBuilder();
        using var stdoutClosed = new ManualResetEventSlim();
        using var stderrClosed = new ManualResetEventSlim();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Append(e.Data, stdoutClosed);
        process.ErrorDataReceived += (_, e) => Append(e.Data, stderrClosed);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var exited = process.WaitForExit(timeout);
        if (!exited) process.Kill(entireProcessTree: true);
        // The last lines may still be in flight. A bounded wait: a grandchild that outlives the process (a build server,
        // say) would hold the pipes open for minutes.
        stdoutClosed.Wait(TimeSpan.FromSeconds(30));
        stderrClosed.Wait(TimeSpan.FromSeconds(30));
        lock (output)
        {
            if (!exited) throw new TimeoutException($"'{commandLine}' did not finish within {timeout}. Output:\n{output}");
            return new ChildProcessResult(process.ExitCode, output.ToString(), commandLine);
        }

        void Append(string? line, ManualResetEventSlim closed)
        {
            if (line is null) closed.Set();
            else lock (output) output.AppendLine(line);
        }
    }
}
