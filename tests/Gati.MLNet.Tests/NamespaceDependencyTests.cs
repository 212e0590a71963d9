using System.Text.RegularExpressions;

namespace Gati.MLNet.Tests;

/// <summary>
/// The library's layers as its source uses them: which of its namespaces (Policy, Data, Models, Onnx, Training,
/// Transforms, Inference, Online) reaches which, through a <c>using</c> directive or a qualified name. No dependency may
/// close a cycle: today the layers go, from the bottom, Policy, Data and Onnx (each reaching none of the others), Models,
/// Inference, Transforms, Training, Online (docs/architecture.md). A new cycle fails here, naming the files that make it.
/// </summary>
public sealed partial class NamespaceDependencyTests
{
    private static readonly string[] Layers = ["Policy", "Data", "Models", "Onnx", "Training", "Transforms", "Inference", "Online"];

    /// <summary>Edges allowed inside a cycle: none since issue 26 took the tangle apart; keep it empty.</summary>
    private static readonly HashSet<string> KnownCycleEdges = [];

    [Fact]
    public void Namespaces_NoNewDependencyClosesACycle()
    {
        var edges = Edges();
        var cyclic = edges.Keys.Where(e => InCycle(e, edges.Keys)).ToArray();
        var added = cyclic.Where(e => !KnownCycleEdges.Contains(e)).Select(e => $"{e} (in {string.Join(", ", edges[e].Take(3))})").ToArray();
        Assert.True(added.Length == 0, "New namespace dependencies close a cycle: " + string.Join("; ", added));
        // The ratchet only tightens: an edge that is gone (or no longer in a cycle) must leave the list too.
        var gone = KnownCycleEdges.Where(e => !cyclic.Contains(e)).ToArray();
        Assert.True(gone.Length == 0, "No longer in a cycle (remove from KnownCycleEdges): " + string.Join(", ", gone));
    }

    [Fact]
    public void Edges_ReadFromTheSource_FindKnownDependencies()
    {
        // Guards the scanner itself: a regex that found nothing would pass the ratchet above.
        var edges = Edges();
        Assert.Contains("Transforms -> Models", edges.Keys);
        Assert.Contains("Training -> Models", edges.Keys);
        Assert.DoesNotContain("Data -> Online", edges.Keys);
        Assert.DoesNotContain(edges.Keys, e => e.StartsWith("Policy ->", StringComparison.Ordinal)); // the exit policy depends on none of them
        Assert.Contains("Online -> Inference", edges.Keys); // Online is on top: it uses the engine, nothing uses it
    }

    /// <summary>"A -> B" with the files of A that reach B.</summary>
    private static Dictionary<string, List<string>> Edges()
    {
        var root = Path.Combine(RepositoryRoot(), "src", "Gati.MLNet");
        var edges = new Dictionary<string, List<string>>();
        foreach (var from in Layers)
        {
            var folder = Path.Combine(root, from);
            Assert.True(Directory.Exists(folder), $"{folder} is missing");
            foreach (var file in Directory.EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories))
            {
                var text = Comments().Replace(File.ReadAllText(file), "");
                foreach (var to in Layers.Where(l => l != from))
                {
                    if (!Regex.IsMatch(text, $@"using Gati\.MLNet\.{to}(\.[A-Za-z]+)*;|Gati\.MLNet\.{to}\.|(?<![A-Za-z0-9_.]){to}\.[A-Z][A-Za-z]+")) continue;
                    var key = $"{from} -> {to}";
                    if (!edges.TryGetValue(key, out var files)) edges[key] = files = [];
                    files.Add(Path.GetRelativePath(root, file));
                }
            }
        }
        return edges;
    }

    private static bool InCycle(string edge, IEnumerable<string> edges)
    {
        var parts = edge.Split(" -> ");
        var next = edges.Select(e => e.Split(" -> ")).ToLookup(e => e[0], e => e[1]);
        // The edge A -> B is in a cycle when B reaches A.
        var seen = new HashSet<string>();
        var stack = new Stack<string>([parts[1]]);
        while (stack.Count > 0)
        {
            var node = stack.Pop();
            if (node == parts[0]) return true;
            if (!seen.Add(node)) continue;
            foreach (var n in next[node]) stack.Push(n);
        }
        return false;
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Gati.MLNet.sln"))) return dir.FullName;
        throw new InvalidOperationException($"Gati.MLNet.sln not found above {AppContext.BaseDirectory}.");
    }

    // Line and XML-doc comments: a <see cref="Training.X"/> in a comment is not a dependency of the code.
    [GeneratedRegex(@"//[^\n]*")]
    private static partial Regex Comments();
}
