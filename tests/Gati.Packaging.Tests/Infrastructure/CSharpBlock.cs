namespace Gati.Packaging.Tests.Infrastructure;

/// <summary>
/// A ```csharp block of a markdown file. <see cref="Marker"/> is the text of a <c>&lt;!-- snippet: ... --&gt;</c> comment on
/// the line just above the fence, or null.
/// </summary>
/// <param name="File">The markdown file, relative to the repository root ('/'-separated).</param>
/// <param name="Line">1-based line of the block's first code line.</param>
/// <param name="Code">The code, with '\n' line ends.</param>
/// <param name="Marker">The snippet marker's text, or null.</param>
public sealed record CSharpBlock(string File, int Line, string Code, string? Marker)
{
    /// <summary>File:line, as test names and compiler messages show it.</summary>
    public string Id => $"{File}:{Line}";

    /// <summary>The ```csharp (also ```cs, ```c#) blocks of a markdown file, in order.</summary>
    public static IReadOnlyList<CSharpBlock> Read(string repositoryRoot, string relativePath)
    {
        var lines = System.IO.File.ReadAllText(Path.Combine(repositoryRoot, relativePath)).Replace("\r\n", "\n").Split('\n');
        var blocks = new List<CSharpBlock>();
        for (var i = 0; i < lines.Length; i++)
        {
            var fence = lines[i].Trim();
            if (fence is not ("```csharp" or "```cs" or "```c#")) continue;
            var end = Array.FindIndex(lines, i + 1, l => l.Trim() == "```");
            if (end < 0) throw new FormatException($"{relativePath}:{i + 1}: the code block is never closed.");
            var code = string.Join('\n', lines[(i + 1)..end]) + "\n";
            blocks.Add(new CSharpBlock(relativePath, i + 2, code, MarkerAbove(lines, i)));
            i = end;
        }
        return blocks;
    }

    private static string? MarkerAbove(string[] lines, int fence)
    {
        if (fence == 0) return null;
        var above = lines[fence - 1].Trim();
        const string Open = "<!-- snippet:", Close = "-->";
        return above.StartsWith(Open, StringComparison.Ordinal) && above.EndsWith(Close, StringComparison.Ordinal)
            ? above[Open.Length..^Close.Length].Trim()
            : null;
    }
}
