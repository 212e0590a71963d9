using Gati.Cli.Infrastructure;

namespace Gati.Cli.Tests;

public sealed class CommandLineTextTests
{
    [Fact]
    public void Of_ParsedCommand_IsWhatTheUserTyped()
    {
        var result = GatiCommand.Create().Parse(["report", "predictors", "--model", "models/a b.zip", "--rows", "200", "--output-dir", "out/it's"]);
        Assert.Equal("gati report predictors --model 'models/a b.zip' --rows 200 --output-dir 'out/it'\\''s'", CommandLineText.Of(result));
    }

    [Theory]
    [InlineData("--agreement-target", "--agreement-target")]
    [InlineData("0.99", "0.99")]
    [InlineData("", "''")]
    [InlineData("$HOME", "'$HOME'")]
    public void Quote_OnlyWhereAShellNeedsIt(string argument, string expected) => Assert.Equal(expected, CommandLineText.Quote(argument));
}
