using System.CommandLine;
using System.Globalization;
using Spectre.Console;

namespace Gati.Cli.Infrastructure;

/// <summary>Turns expected failures (bad input, bad files, cancellation) into a one-line error and exit code.</summary>
internal static class CommandErrors
{
    public const int Failure = 1;
    public const int Cancelled = 130;

    /// <summary>Runs a command's action; <paramref name="result"/> names the options that argument errors are about.</summary>
    public static int Run(IAnsiConsole console, ParseResult result, Func<int> action)
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
        catch (ArgumentException ex)
        {
            console.MarkupLineInterpolated($"[red]error:[/] {Describe(ex, result.CommandResult.Command)}");
            return Failure;
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or FormatException or InvalidDataException or UnauthorizedAccessException)
        {
            console.MarkupLineInterpolated($"[red]error:[/] {ex.Message}");
            return Failure;
        }
    }

    /// <summary>
    /// The message of an argument error in the command's terms: a library parameter that matches one of the command's
    /// options (Epochs → --epochs) is named as that option, and other parameter names (e.g. 'count') are left out.
    /// </summary>
    public static string Describe(ArgumentException ex, Command command)
    {
        var message = WithoutParameter(ex);
        if (ex.ParamName is not { } name) return message;
        var option = command.Options.FirstOrDefault(o => o.Name == "--" + Kebab(name) || o.Name == name);
        return option is null || message.Contains(option.Name, StringComparison.Ordinal) ? message : $"{option.Name}: {message}";
    }

    /// <summary>The message without .NET's " (Parameter 'x')" suffix; an out-of-range value is shown as "(got v)".</summary>
    public static string WithoutParameter(ArgumentException ex)
    {
        var message = ex.Message;
        if (ex is ArgumentOutOfRangeException { ActualValue: { } actual })
        {
            var shown = Convert.ToString(actual, CultureInfo.InvariantCulture);
            message = message.Replace($"{Environment.NewLine}Actual value was {actual}.", "", StringComparison.Ordinal) + $" (got {shown})";
        }
        return ex.ParamName is { } name ? message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : message;
    }

    private static string Kebab(string name) =>
        string.Concat(name.Select((c, i) => char.IsUpper(c) ? (i > 0 ? "-" : "") + char.ToLowerInvariant(c) : c.ToString()));
}
