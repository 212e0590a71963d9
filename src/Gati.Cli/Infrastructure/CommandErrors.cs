using Spectre.Console;

namespace Gati.Cli.Infrastructure;

/// <summary>Turns expected failures (bad input, bad files, cancellation) into a one-line error and exit code.</summary>
internal static class CommandErrors
{
    public const int Failure = 1;
    public const int Cancelled = 130;

    public static int Run(IAnsiConsole console, Func<int> action)
    {
        try
        {
            return action();
        }
        catch (OperationCanceledException)
        {
            console.MarkupLine("[yellow]Cancelled.[/] The last completed epoch's checkpoint (if any) can be resumed with --resume.");
            return Cancelled;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or IOException or FormatException or InvalidDataException or UnauthorizedAccessException)
        {
            console.MarkupLineInterpolated($"[red]error:[/] {ex.Message}");
            return Failure;
        }
    }
}
