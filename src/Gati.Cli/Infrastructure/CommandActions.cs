namespace Gati.Cli.Infrastructure;

/// <summary>How the commands are put together: their handlers, option lists and command groups, written once.</summary>
internal static class CommandActions
{
    /// <summary>
    /// Runs <paramref name="run"/> as the command's handler: expected failures become a one-line error and exit code
    /// (<see cref="CommandErrors"/>).
    /// </summary>
    public static void SetRun(this Command command, Func<ParseResult, CancellationToken, int> run) =>
        command.SetAction((result, cancellation) => Task.FromResult(CommandErrors.Run(AnsiConsole.Console, () => run(result, cancellation))));

    /// <summary>As <see cref="SetRun(Command, Func{ParseResult, CancellationToken, int})"/>, after applying <paramref name="runtime"/> (before any TorchSharp use).</summary>
    public static void SetRun(this Command command, RuntimeArguments runtime, Func<ParseResult, CancellationToken, int> run) =>
        command.SetRun((result, cancellation) =>
        {
            runtime.Apply(result);
            return run(result, cancellation);
        });

    /// <summary>Adds <paramref name="options"/> in this order, the order of the help text.</summary>
    public static void AddOptions(this Command command, params Option[] options)
    {
        foreach (var option in options) command.Options.Add(option);
    }

    /// <summary>A command that only groups subcommands (<c>gati bench</c>, <c>gati export</c>, ...).</summary>
    public static Command Group(string name, string description, params Command[] subcommands)
    {
        var command = new Command(name, description);
        foreach (var subcommand in subcommands) command.Subcommands.Add(subcommand);
        return command;
    }
}
