using System.Text.RegularExpressions;
using Gati.MLNet;
using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Gati.Packaging.Tests.Infrastructure;
using Microsoft.ML;
using Xunit.Abstractions;

namespace Gati.Packaging.Tests;

/// <summary>
/// docs/your-own-model.md opens with samples/Gati.Samples.PretrainedResNet/Program.cs, character for character, and
/// that program runs on real Fashion-MNIST image files with the real pretrained ResNet-18 of
/// Microsoft.ML.DnnImageFeaturizer.ResNet18 (small sizes: about a minute on 2 cores).
/// </summary>
public sealed class PretrainedSampleTests(ITestOutputHelper output)
{
    private const string ProgramPath = "samples/Gati.Samples.PretrainedResNet/Program.cs";

    [Fact]
    public void YourOwnModelGuide_FirstCSharpBlock_IsThePretrainedSample()
    {
        var blocks = CSharpBlock.Read(Repository.Root, "docs/your-own-model.md");
        var program = File.ReadAllText(Repository.PathOf(ProgramPath)).Replace("\r\n", "\n");
        Assert.NotEmpty(blocks);
        Assert.Equal(program.TrimEnd('\n'), blocks[0].Code.TrimEnd('\n'));
    }

    [Fact]
    public void PretrainedSample_SmallRun_ImportsThePipelineAddsCachesAndPredictsByImagePath()
    {
        using var work = new TempDirectory();
        var images = work.Sub("images");
        var ml = new MLContext(0);
        ml.Data.ExportFashionMnistImages(Path.Combine(images, "train"), DatasetSplit.Train, 600);
        ml.Data.ExportFashionMnistImages(Path.Combine(images, "test"), DatasetSplit.Test, 500);
        var sample = Repository.BuiltAssembly("samples/Gati.Samples.PretrainedResNet", "Gati.Samples.PretrainedResNet");

        var run = ChildProcess.Run(ChildProcess.Dotnet, ["exec", sample, images, "300", "300", work.File("out")], work.Path, TimeSpan.FromMinutes(15)).EnsureSuccess();
        output.WriteLine(run.Output);

        Assert.Contains(run.Lines, l => Regex.IsMatch(l, @"^ML\.NET pipeline: \d+(\.\d)? ?% accuracy on 500 test images$"));
        var answers = run.Lines.Where(l => Regex.IsMatch(l, @"^\d{6}\.png: [\w/ -]+, exit (0|3|5|7) \(0 = full model\), \d+\.\d ms$")).ToArray();
        Assert.Equal(5, answers.Length);
        Assert.True(File.Exists(work.File("out/pipeline.zip")), "the ML.NET pipeline is saved");
        Assert.True(File.Exists(work.File("out/sample-early-exit.zip")), "the early-exit model is saved");
        // The saved early-exit zip is a Gati model: it loads and names its caches.
        var model = ml.Gati().LoadModel(work.File("out/sample-early-exit.zip"), out _);
        Assert.NotNull(model);
    }
}
