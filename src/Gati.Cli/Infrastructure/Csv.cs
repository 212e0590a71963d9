namespace Gati.Cli.Infrastructure;

/// <summary>RFC 4180 field quoting.</summary>
internal static class Csv
{
    public static string Escape(string field) =>
        field.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + field.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : field;
}
