using Spectre.Console;

namespace Gati.Cli.Infrastructure;

/// <summary>Console behaviour for logs: when output is redirected (CI, files), never wrap lines.</summary>
internal static class ConsoleSetup
{
    public static void Configure()
    {
        if (Console.IsOutputRedirected) AnsiConsole.Console.Profile.Width = 4096;
    }
}
