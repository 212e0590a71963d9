namespace Gati.Cli.Infrastructure;

/// <summary>
/// The dataset and runtime options of the commands that run a network on a dataset, added around each command's own
/// options in the order every such command's help shows: the model files it reads, the dataset's options, its own
/// options, then the runtime's.
/// </summary>
internal sealed class CommandArguments
{
    public DatasetArguments Dataset { get; } = new();

    public RuntimeArguments Runtime { get; } = new();

    /// <summary>The command with <paramref name="leading"/> (its model options), the dataset's, <paramref name="options"/> and the runtime's.</summary>
    public Command CreateCommand(string name, string description, Option[] leading, params Option[] options)
    {
        var command = new Command(name, description);
        command.AddOptions(leading);
        Dataset.AddTo(command);
        command.AddOptions(options);
        Runtime.AddTo(command);
        return command;
    }

    /// <summary>The --device value.</summary>
    public string Device(ParseResult result) => result.GetValue(Runtime.Device)!;
}
