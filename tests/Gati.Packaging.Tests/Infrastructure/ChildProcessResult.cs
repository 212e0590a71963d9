namespace Gati.Packaging.Tests.Infrastructure;

/// <summary>How a child process ended.</summary>
public sealed record ChildProcessResult(int ExitCode, string Output, string CommandLine)
{
    /// <summary>The output's lines, without trailing blanks.</summary>
    public IReadOnlyList<string> Lines => Output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).ToArray();

    /// <summary>Throws with the whole output unless the process exited with 0.</summary>
    public ChildProcessResult EnsureSuccess()
    {
        if (ExitCode != 0) throw new InvalidOperationException($"'{CommandLine}' exited with {ExitCode}. Output:\n{Output}");
        return this;
    }
}
