using System.IO.Compression;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Gati.Packaging.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Gati.Packaging.Tests;

/// <summary>
/// The consumer check: `dotnet pack` of this checkout, then what a user does with the packages, in a temporary folder
/// outside the repository: a new console app that adds Gati.MLNet, builds, trains, saves, and serves the saved model
/// with early exit in a new process; and `dotnet tool install` of gati, whose `--help` and `evaluate` work.
/// </summary>
public sealed class PackageConsumerTests(PackageWorkspace workspace, ITestOutputHelper output) : IClassFixture<PackageWorkspace>
{
    [Fact]
    public void Pack_WritesLibraryServingAndToolPackages()
    {
        var version = workspace.LibraryVersion;
        var files = Directory.GetFiles(workspace.PackagesFolder).Select(f => new FileInfo(f)).OrderBy(f => f.Name, StringComparer.Ordinal).ToArray();
        foreach (var file in files) output.WriteLine($"{file.Name}: {file.Length:N0} bytes");

        Assert.Equal(
            new[] { $"Gati.Extensions.ML.{version}.nupkg", $"Gati.Extensions.ML.{version}.snupkg", $"Gati.MLNet.{version}.nupkg",
                    $"Gati.MLNet.{version}.snupkg", $"gati.{version}.nupkg", $"gati.linux-x64.{version}.nupkg" },
            files.Select(f => f.Name));

        using var library = ZipFile.OpenRead(Path.Combine(workspace.PackagesFolder, $"Gati.MLNet.{version}.nupkg"));
        var entries = library.Entries.Select(e => e.FullName).ToHashSet();
        foreach (var expected in new[]
                 {
                     "lib/net10.0/Gati.MLNet.dll", "lib/net10.0/Gati.MLNet.xml", "README.md",
                     "buildTransitive/Gati.MLNet.targets", "buildTransitive/Gati.LibTorchSharpPatch.targets",
                     "buildTransitive/WeakenGlibcxxRequirement.cs", "buildTransitive/probe/Gati.MLNet.NativeProbe.dll",
                 })
            Assert.Contains(expected, entries);
        var dependencies = Dependencies(library, "Gati.MLNet.nuspec");
        Assert.Equal("[6.0.0, 6.1.0)", dependencies["Microsoft.ML"]);
        Assert.Equal("[6.0.0, 6.1.0)", dependencies["Microsoft.ML.ImageAnalytics"]);
        Assert.Equal("[0.107.0, 0.108.0)", dependencies["TorchSharp"]);
        Assert.Equal("[0.107.0, 0.108.0)", dependencies["TorchSharp-cpu"]);
        Assert.Contains("Microsoft.ML.OnnxRuntime", dependencies.Keys);

        using var serving = ZipFile.OpenRead(Path.Combine(workspace.PackagesFolder, $"Gati.Extensions.ML.{version}.nupkg"));
        Assert.Equal(version, Dependencies(serving, "Gati.Extensions.ML.nuspec")["Gati.MLNet"]);

        using var tool = ZipFile.OpenRead(Path.Combine(workspace.PackagesFolder, $"gati.linux-x64.{version}.nupkg"));
        var toolEntries = tool.Entries.Select(e => e.FullName).ToHashSet();
        Assert.Contains("tools/net10.0/linux-x64/gati.dll", toolEntries);
        Assert.Contains("tools/net10.0/linux-x64/libLibTorchSharp.so", toolEntries);
        Assert.Contains("tools/net10.0/linux-x64/Gati.MLNet.NativeProbe.dll", toolEntries);
    }

    [Fact]
    public void ConsoleApp_OutsideTheRepository_TrainsSavesAndServesWithEarlyExitInANewProcess()
    {
        var (app, train) = workspace.TrainedApp;
        output.WriteLine(train.Output);

        Assert.False(app.Folder.StartsWith(Repository.Root, StringComparison.Ordinal), $"{app.Folder} is inside the repository");
        // What buildTransitive/Gati.MLNet.targets adds to a plain project: the probe beside Gati.MLNet.dll, libtorch's natives.
        Assert.True(File.Exists(Path.Combine(app.OutputFolder, "Gati.MLNet.NativeProbe.dll")), "the native probe is copied beside Gati.MLNet.dll");
        Assert.True(File.Exists(Path.Combine(app.OutputFolder, "runtimes", "linux-x64", "native", "libLibTorchSharp.so")));
        Assert.Contains("trained and saved: early-exit.zip", train.Lines);
        var trainedExits = Assert.Single(train.Lines, l => l.StartsWith("early exits:", StringComparison.Ordinal));

        var predict = app.Run(TimeSpan.FromMinutes(5), "predict").EnsureSuccess();
        output.WriteLine(predict.Output);

        Assert.Contains("loaded: early-exit.zip, caches on layers 5,7", predict.Lines);
        Assert.Contains("same answers as the training process: 100 of 100", predict.Lines);
        var exits = Assert.Single(predict.Lines, l => l.StartsWith("early exits:", StringComparison.Ordinal));
        Assert.Equal(trainedExits, exits);
        var exited = int.Parse(Regex.Match(exits, @"^early exits: (\d+) of 100 ").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(exited, 1, 100);
    }

    [Fact]
    public void ConsoleApp_OutsideTheRepository_AddsCachesToTheTutorialsPretrainedPipelineAndPredictsByPath()
    {
        // The app references Gati.MLNet from the packed feed and Microsoft.ML.DnnImageFeaturizer.ResNet18 from NuGet, as
        // a user following ML.NET's image classification tutorial would; it runs on real Fashion-MNIST image files.
        var app = workspace.TrainedApp.App;
        var images = Path.Combine(app.ModelFolder, "images");
        var ml = new Microsoft.ML.MLContext(0);
        Gati.MLNet.DataCatalogExtensions.ExportFashionMnistImages(ml.Data, Path.Combine(images, "train"), Gati.MLNet.Data.DatasetSplit.Train, 150);
        Gati.MLNet.DataCatalogExtensions.ExportFashionMnistImages(ml.Data, Path.Combine(images, "test"), Gati.MLNet.Data.DatasetSplit.Test, 30);

        var run = app.Run(TimeSpan.FromMinutes(10), "pretrained").EnsureSuccess();
        output.WriteLine(run.Output);

        Assert.Contains("pretrained: caches on cut points 3,5, 30 test images", run.Lines);
        Assert.True(File.Exists(Path.Combine(app.ModelFolder, "pretrained-early-exit.zip")));
        Assert.Single(run.Lines, l => Regex.IsMatch(l, @"^early exits: \d+ of 30 "));
        var agree = int.Parse(Regex.Match(Assert.Single(run.Lines, l => l.StartsWith("answers equal to the ML.NET pipeline's:", StringComparison.Ordinal)),
            @": (\d+) of 30").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(agree, 21, 30); // a wrong import would agree by chance (about 3 of 30)
    }

    [Fact]
    public void GatiTool_InstalledFromThePackage_ShowsHelpAndEvaluatesASavedModel()
    {
        var model = workspace.TrainedApp.App.ModelPath;
        var tools = Path.Combine(workspace.Root, "tools");

        PackageWorkspace.RunDotnet(workspace.Root, TimeSpan.FromMinutes(5),
            "tool", "install", "gati", "--tool-path", tools, "--version", workspace.LibraryVersion, "--add-source", workspace.PackagesFolder).EnsureSuccess();
        var gati = Path.Combine(tools, "gati");
        var help = ChildProcess.Run(gati, ["--help"], workspace.Root, TimeSpan.FromMinutes(2), PackageWorkspace.Environment()).EnsureSuccess();
        var evaluate = ChildProcess.Run(gati, ["evaluate", "--model", model, "--rows", "100"], workspace.Root, TimeSpan.FromMinutes(5),
            PackageWorkspace.Environment()).EnsureSuccess();
        output.WriteLine(help.Output);
        output.WriteLine(evaluate.Output);

        Assert.Contains(help.Lines, l => l.TrimStart().StartsWith("evaluate ", StringComparison.Ordinal));
        Assert.Contains(help.Lines, l => l.TrimStart().StartsWith("fit-caches ", StringComparison.Ordinal));
        Assert.Contains(evaluate.Lines, l => l.StartsWith($"{model} on fashion-mnist test (100 images, ", StringComparison.Ordinal));
        Assert.Contains(evaluate.Lines, l => Regex.IsMatch(l, @"^Accuracy: \d+\.\d\d %"));
    }

    private static Dictionary<string, string> Dependencies(ZipArchive package, string nuspec)
    {
        using var stream = package.GetEntry(nuspec)!.Open();
        return XDocument.Load(stream).Descendants().Where(e => e.Name.LocalName == "dependency")
            .ToDictionary(e => (string)e.Attribute("id")!, e => (string)e.Attribute("version")!);
    }
}
