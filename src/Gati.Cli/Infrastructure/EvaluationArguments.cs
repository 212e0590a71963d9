namespace Gati.Cli.Infrastructure;

/// <summary>
/// --model, the dataset, --split, --rows and the runtime options: what the commands that measure a saved model on one
/// dataset split share (evaluate, evaluate-early-exit, report predictors).
/// </summary>
internal sealed class EvaluationArguments(string modelDescription, string splitDescription, string rowsDescription)
{
    private readonly CommandArguments _common = new();

    public Option<string> Model { get; } = new("--model", "-m") { Description = modelDescription, Required = true };

    public DatasetArguments Dataset => _common.Dataset;

    public SplitArguments Split { get; } = new(splitDescription);

    public Option<long?> Rows { get; } = new Option<long?>("--rows") { Description = rowsDescription }.AtLeast(1L);

    public RuntimeArguments Runtime => _common.Runtime;

    /// <summary>The command with, in this order: --model, the dataset's options, --split, --rows, <paramref name="options"/> and the runtime's.</summary>
    public Command CreateCommand(string name, string description, params Option[] options) =>
        _common.CreateCommand(name, description, [Model], [Split.Split, Rows, .. options]);

    public string ModelPath(ParseResult result) => result.GetValue(Model)!;

    public string Device(ParseResult result) => _common.Device(result);
}
