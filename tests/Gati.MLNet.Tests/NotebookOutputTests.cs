using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Gati.MLNet.Tests;

/// <summary>
/// A fact over the executed sample notebooks: scripts/test.sh runs them with dotnet-repl (scripts/notebooks.sh) and
/// then sets GATI_NOTEBOOK_OUTPUTS to the folder of executed copies. Without it (e.g. a plain dotnet test), skipped.
/// </summary>
public sealed class NotebookFactAttribute : FactAttribute
{
    public NotebookFactAttribute()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("GATI_NOTEBOOK_OUTPUTS")))
            Skip = "Notebook outputs are checked after scripts/notebooks.sh has executed them (scripts/test.sh does both).";
    }
}

public sealed partial class NotebookOutputTests
{
    private static string Folder => Environment.GetEnvironmentVariable("GATI_NOTEBOOK_OUTPUTS")!;

    /// <summary>Every output of an executed notebook: (cell index, output type, text).</summary>
    private static List<(int Cell, string Type, string Text)> Outputs(string name)
    {
        var path = Path.Combine(Folder, name + ".ipynb");
        Assert.True(File.Exists(path), $"{path} is missing: did scripts/notebooks.sh run?");
        using var notebook = JsonDocument.Parse(File.ReadAllText(path));
        var result = new List<(int, string, string)>();
        var cells = notebook.RootElement.GetProperty("cells").EnumerateArray().ToArray();
        for (var i = 0; i < cells.Length; i++)
        {
            if (!cells[i].TryGetProperty("outputs", out var outputs)) continue;
            foreach (var output in outputs.EnumerateArray())
            {
                var type = output.GetProperty("output_type").GetString()!;
                var text = type switch
                {
                    "stream" => Join(output.GetProperty("text")),
                    "error" => output.GetProperty("evalue").GetString() ?? "",
                    _ => output.TryGetProperty("data", out var data) ? data.ToString() : "",
                };
                result.Add((i, type, text));
            }
        }
        return result;
    }

    private static string Join(JsonElement text) => text.ValueKind == JsonValueKind.Array ? string.Concat(text.EnumerateArray().Select(t => t.GetString())) : text.GetString() ?? "";

    private static double Result(List<(int Cell, string Type, string Text)> outputs, string name)
    {
        var match = outputs.Select(o => Regex.Match(o.Text, $@"RESULT .*\b{name}=([0-9.]+)")).FirstOrDefault(m => m.Success);
        Assert.True(match is not null, $"no RESULT {name}= line in the notebook's output");
        return double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private static void NoErrorsAndAPlot(List<(int Cell, string Type, string Text)> outputs)
    {
        Assert.DoesNotContain(outputs, o => o.Type == "error");
        Assert.Contains(outputs, o => o.Text.Contains("data:image/png;base64,", StringComparison.Ordinal));
        Assert.Contains(outputs, o => o.Text.Contains("<table>", StringComparison.Ordinal));
    }

    [NotebookFact]
    public void BaseModelNotebook_TrainsAModelFarAboveChance()
    {
        var outputs = Outputs("01-base-model");
        NoErrorsAndAPlot(outputs);
        Assert.InRange(Result(outputs, "base_accuracy"), 0.5, 1.0);
    }

    [NotebookFact]
    public void PredictorsNotebook_LateLayersAgreeWithTheBaseModel()
    {
        var outputs = Outputs("02-predictors");
        NoErrorsAndAPlot(outputs);
        Assert.InRange(Result(outputs, "layer8_agreement"), 0.85, 1.0);
    }

    [NotebookFact]
    public void EarlyExitNotebook_ExitsEarlyAndKeepsAgreement()
    {
        var outputs = Outputs("03-early-exit");
        NoErrorsAndAPlot(outputs);
        Assert.InRange(Result(outputs, "agreement"), 0.95, 1.0);
        Assert.InRange(Result(outputs, "exit_early"), 0.01, 1.0);
        Assert.True(Result(outputs, "speedup") > 0);
        Assert.Contains(outputs, o => o.Text.Contains("Chosen:", StringComparison.Ordinal) || o.Text.Contains("the plan is the full model", StringComparison.Ordinal));
    }
}
