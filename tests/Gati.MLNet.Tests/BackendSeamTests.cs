using System.Text.RegularExpressions;
using Gati.MLNet.Inference;
using Gati.MLNet.Inference.Backends;

namespace Gati.MLNet.Tests;

/// <summary>
/// The backend choice lives behind one seam (Inference/Backends: <see cref="ExecutionBackends"/>), and the engine does
/// not know online caches exist (they watch it through <see cref="IEarlyExitObserver"/>). These scan the sources, so a
/// new `if (Backend == ...)` or a new Online reference fails here rather than in review.
/// </summary>
public sealed class BackendSeamTests
{
    // A decision taken on the enum's value: a comparison, a case label, a switch arm or a conditional's branch.
    private static readonly Regex SwitchOnBackend = new(
        @"(==|!=)\s*ExecutionBackend\.\w+|ExecutionBackend\.\w+\s*(==|!=|=>|\?)|case\s+ExecutionBackend\.|\bis\s+ExecutionBackend\.|\?\s*ExecutionBackend\.\w+\s*:",
        RegexOptions.Compiled);

    private static readonly string Src = Path.Combine(FindRoot(), "src");

    [Fact]
    public void Sources_OutsideTheBackendsFolder_DoNotSwitchOnExecutionBackend()
    {
        var backends = Path.Combine(Src, "Gati.MLNet", "Inference", "Backends") + Path.DirectorySeparatorChar;
        var offenders = Sources(Src)
            .Where(f => !f.StartsWith(backends, StringComparison.Ordinal))
            .SelectMany(f => Matches(f, SwitchOnBackend))
            .ToArray();
        Assert.True(offenders.Length == 0, "Ask ExecutionBackends.For(kind) instead of switching on the enum:\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void Inference_DoesNotReferenceOnline()
    {
        // The bounds the optimizer needs live in Policy (AgreementBounds); nothing from Online may appear.
        var online = new Regex(@"using\s+Gati\.MLNet\.Online|\bOnline\.\w+|\b(ShadowRow|ShadowSampler|IShadowTap|ShadowObserver|OnlineCaches)\b", RegexOptions.Compiled);
        var offenders = Sources(Path.Combine(Src, "Gati.MLNet", "Inference")).SelectMany(f => Matches(f, online)).ToArray();
        Assert.True(offenders.Length == 0, "Inference must not know Online (observe the engine through IEarlyExitObserver):\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void For_EveryBackend_HasItsOwnDescriptor()
    {
        foreach (var kind in Enum.GetValues<ExecutionBackend>()) Assert.Equal(kind, ExecutionBackends.For(kind).Kind);
        Assert.Equal(Enum.GetValues<ExecutionBackend>().Length, ExecutionBackends.All.Select(d => d.Kind).Distinct().Count());
        Assert.Throws<ArgumentOutOfRangeException>(() => ExecutionBackends.For((ExecutionBackend)99));
    }

    [Fact]
    public void ResolveLoadDevice_OnnxRuntimeKeepsWeightsOnTheCpu_TorchSharpUsesTheConfiguredDevice()
    {
        Assert.Equal("cpu", ExecutionBackends.ResolveLoadDevice(new EarlyExitEngineOptions { Backend = ExecutionBackend.OnnxRuntime, Device = "cuda:1" }));
        Assert.Equal("cuda:1", ExecutionBackends.ResolveLoadDevice(new EarlyExitEngineOptions { Backend = ExecutionBackend.TorchSharp, Device = "cuda:1" }));
    }

    [Fact]
    public void Capabilities_MatchWhatEachBackendCanDo()
    {
        var ort = ExecutionBackends.For(ExecutionBackend.OnnxRuntime);
        var torch = ExecutionBackends.For(ExecutionBackend.TorchSharp);
        Assert.True(ort.ExposesActivations("cpu"));
        Assert.False(ort.ExposesActivations("cuda:0"));
        Assert.False(torch.ExposesActivations("cpu"));
        Assert.False(ort.BatchingPays("cpu"));
        Assert.True(ort.BatchingPays("cuda:0"));
        Assert.True(torch.BatchingPays("cpu"));
        Assert.True(ort.HasSingleGraph(new EarlyExitEngineOptions()));
        Assert.False(ort.HasSingleGraph(new EarlyExitEngineOptions { SingleGraphAtBatchOne = false }));
        Assert.False(torch.HasSingleGraph(new EarlyExitEngineOptions()));
    }

    private static IEnumerable<string> Sources(string folder) =>
        Directory.EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal));

    private static IEnumerable<string> Matches(string file, Regex pattern) =>
        File.ReadLines(file)
            .Select((line, i) => (line, i))
            .Where(x => !x.line.TrimStart().StartsWith("//", StringComparison.Ordinal) && pattern.IsMatch(x.line))
            .Select(x => $"{Path.GetRelativePath(Src, file)}:{x.i + 1}: {x.line.Trim()}");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Gati.MLNet.sln"))) return dir.FullName;
        throw new InvalidOperationException($"No Gati.MLNet.sln above {AppContext.BaseDirectory}.");
    }
}
