namespace Gati.Cli.Infrastructure;

/// <summary>Console behaviour for logs: when output is redirected (CI, files), never wrap lines.</summary>
internal static class ConsoleSetup
{
    public static void Configure()
    {
        if (Console.IsOutputRedirected) AnsiConsole.Console.Profile.Width = 4096;
        // A runtime fix for wrong native numerics changes speed: say so once, where the user sees it.
        NativeNumerics.Checked += (_, report) =>
        {
            if (report.Changed || report.Action == NativeNumericsAction.CheckDisabled)
                AnsiConsole.MarkupLineInterpolated($"[yellow]note:[/] {report.Summary}");
        };
    }
}
