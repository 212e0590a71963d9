namespace Gati.Cli.Infrastructure;

/// <summary>Parses predictor architecture lists such as <c>conv</c> or <c>conv,fc:64</c>.</summary>
internal static class ArchitectureList
{
    public static PredictorArchitecture[] Parse(string text)
    {
        var architectures = Names(text).Select(PredictorArchitecture.Parse).ToArray();
        return architectures.Length > 0 ? architectures : throw new ArgumentException("Name at least one predictor architecture.");
    }

    public static string[] Names(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
