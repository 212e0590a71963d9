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
        catch (ArgumentException ex)
        {
            console.MarkupLineInterpolated($"[red]error:[/] {Describe(ex)}");
            return Failure;
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or FormatException or InvalidDataException or UnauthorizedAccessException)
        {
            console.MarkupLineInterpolated($"[red]error:[/] {ex.Message}");
            return Failure;
        }
    }

    /// <summary>
    /// The message of an argument error in the CLI's terms: a library parameter that matches a gati option
    /// (Epochs → --epochs) is named as that option, and other parameter names (e.g. 'count') are left out.
    /// </summary>
    public static string Describe(ArgumentException ex)
    {
        var message = WithoutParameter(ex);
        if (ex.ParamName is not { } name) return message;
        var option = OptionNames.Value.Contains("--" + Kebab(name)) ? "--" + Kebab(name) : OptionNames.Value.Contains(name) ? name : null;
        return option is null || message.Contains(option, StringComparison.Ordinal) ? message : $"{option}: {message}";
    }

    // Option names are consistent across commands (--epochs, --batch-size, ...), so all of them are looked in.
    private static readonly Lazy<HashSet<string>> OptionNames = new(() =>
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        void Add(Command command)
        {
            foreach (var option in command.Options) names.Add(option.Name);
            foreach (var sub in command.Subcommands) Add(sub);
        }
        Add(GatiCommand.Create());
        return names;
    });

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
