using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;

namespace Gati.Cli.Tests;

/// <summary>Runs the gati command in this process (parsing, help) or as a real child process (kill/resume).</summary>
internal static class CliHost
{
    public static (int ExitCode, string Output) Invoke(params string[] args)
    {
        var output = new StringWriter();
        var previous = AnsiConsole.Console;
        AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        AnsiConsole.Console.Profile.Width = 4096;
        try
        {
            var exit = GatiCommand.Create().Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = output });
            return (exit, output.ToString());
        }
        finally
        {
            AnsiConsole.Console = previous;
        }
    }

    public static string GatiDll => Path.Combine(AppContext.BaseDirectory, "gati.dll");

    public static Process Start(params string[] args)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(GatiDll);
        foreach (var arg in args) start.ArgumentList.Add(arg);
        return Process.Start(start)!;
    }
}
