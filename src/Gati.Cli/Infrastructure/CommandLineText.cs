namespace Gati.Cli.Infrastructure;

/// <summary>
/// The command as a user types it, for the "Command:" line of reports: <c>gati</c> and the parsed arguments, quoted
/// where a POSIX shell needs it. Never the process's own command line, which names the machine's absolute path of
/// gati.dll (and the test host, inside tests).
/// </summary>
internal static class CommandLineText
{
    public static string Of(ParseResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        return "gati" + string.Concat(result.Tokens.Select(t => " " + Quote(t.Value)));
    }

    public static string Quote(string argument)
    {
        if (argument.Length > 0 && argument.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@%+".Contains(c, StringComparison.Ordinal)))
            return argument;
        return "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }
}
