namespace Gati.Cli.Infrastructure;

/// <summary>--split, shared by the commands that measure a model on one dataset split: test (the default) or train.</summary>
internal sealed class SplitArguments
{
    public SplitArguments(string description)
    {
        Split = new Option<string>("--split") { Description = description, DefaultValueFactory = _ => "test" };
        Split.AcceptOnlyFromAmong("test", "train");
    }

    public Option<string> Split { get; }

    public DatasetSplit Read(ParseResult result) => result.GetValue(Split) == "train" ? DatasetSplit.Train : DatasetSplit.Test;
}
