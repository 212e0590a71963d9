using System.Text.RegularExpressions;
using Gati.Packaging.Tests.Infrastructure;
using Gati.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Gati.Packaging.Tests;

/// <summary>
/// The README's C# example is samples/Gati.Samples.Quickstart/Program.cs, character for character, and that program
/// runs (so the README's example compiles, because the solution builds the sample, and works as printed).
/// </summary>
public sealed class ReadmeQuickstartTests(ITestOutputHelper output)
{
    private const string ProgramPath = "samples/Gati.Samples.Quickstart/Program.cs";

    [Fact]
    public void Readme_CSharpExample_IsTheQuickstartProgram()
    {
        var readme = CSharpBlock.Read(Repository.Root, "README.md");
        var program = File.ReadAllText(Repository.PathOf(ProgramPath)).Replace("\r\n", "\n");

        Assert.Single(readme);
        Assert.Equal(program.TrimEnd('\n'), readme[0].Code.TrimEnd('\n'));
    }

    [Fact]
    public void Quickstart_Run_PrintsTrainingEarlyExitAndPlan()
    {
        using var work = new TempDirectory();
        var quickstart = Repository.BuiltAssembly("samples/Gati.Samples.Quickstart", "Gati.Samples.Quickstart");

        var run = ChildProcess.Run(ChildProcess.Dotnet, ["exec", quickstart], work.Path, TimeSpan.FromMinutes(15)).EnsureSuccess();
        output.WriteLine(run.Output);

        var lines = run.Lines;
        for (var epoch = 1; epoch <= 3; epoch++)
            Assert.Contains(lines, l => Regex.IsMatch(l, $@"^epoch {epoch}/3: loss \d+\.\d{{3}}, train accuracy \d+(\.\d)? ?%$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^Base model: \d+(\.\d)? ?% accuracy on 200 test images$"));
        Assert.Contains(lines, l => Regex.IsMatch(l, @"^First test image: [\w/ -]+, exit layer (0|3|5|7) \(0 = full model\), \d+\.\d\d ms$"));
        Assert.Contains(lines, l => l.StartsWith("Measured on 200 held-out rows", StringComparison.Ordinal));
        foreach (var layer in new[] { 3, 5, 7 })
            Assert.Contains(lines, l => l.StartsWith($"| {layer} | Conv(3, 1) |", StringComparison.Ordinal));
        Assert.True(File.Exists(work.File("early-exit.zip")), "the early-exit model is saved in the working directory");
        Assert.True(File.Exists(work.File("resnet.ckpt")), "the training checkpoint is saved in the working directory");
    }
}
