using Microsoft.ML;
using Gati.MLNet.Tests.Infrastructure;

namespace Gati.Cli.Tests;

public sealed class CommandLineTests
{
    [Fact]
    public void Help_TrainBase_ExplainsEveryKebabCaseOption()
    {
        var (exit, output) = CliHost.Invoke("train-base", "--help");
        Assert.Equal(0, exit);
        foreach (var option in new[] { "--arch", "--dataset", "--data-dir", "--width", "--epochs", "--lr", "--batch-size", "--device", "--output", "--resume", "--checkpoint" })
            Assert.Contains(option, output);
        Assert.Contains("auto (CUDA when available, else CPU)", output);
    }

    [Fact]
    public void Help_Root_ListsTheCommands()
    {
        var (_, output) = CliHost.Invoke("--help");
        Assert.Contains("train-base", output);
        Assert.Contains("evaluate", output);
        Assert.Contains("bench", output);
    }

    [Fact]
    public void TrainBase_UnknownDevice_IsAParseError()
    {
        var (exit, output) = CliHost.Invoke("train-base", "--output", "x.zip", "--device", "tpu");
        Assert.NotEqual(0, exit);
        Assert.Contains("auto, cpu, cuda or cuda:N", output);
    }

    [Fact]
    public void TrainBase_UnknownArchitecture_FailsWithTheValue()
    {
        using var temp = new TempDirectory();
        var (exit, output) = CliHost.Invoke("train-base", "--output", temp.File("x.zip"), "--arch", "resnet19", "--device", "cpu");
        Assert.Equal(1, exit);
        Assert.Contains("--arch: Unknown architecture 'resnet19'", output);
        Assert.DoesNotContain("   at ", output);
    }

    [Fact]
    public void Evaluate_MissingModel_SaysWhichFile()
    {
        using var temp = new TempDirectory();
        var (exit, output) = CliHost.Invoke("evaluate", "--model", temp.File("missing.zip"), "--device", "cpu");
        Assert.Equal(1, exit);
        Assert.Contains("missing.zip", output);
    }

    private sealed class PlainRow
    {
        public float A { get; set; }

        public float B { get; set; }
    }

    [Fact]
    public void Evaluate_PlainMLNetModel_SaysItIsNotAGatiModel()
    {
        using var temp = new TempDirectory();
        var ml = new MLContext(0);
        var data = ml.Data.LoadFromEnumerable([new PlainRow { A = 1, B = 2 }]);
        var path = temp.File("plain.zip");
        ml.Model.Save(ml.Transforms.Concatenate("Features", "A", "B").Fit(data), data.Schema, path);

        var (exit, output) = CliHost.Invoke("evaluate", "--model", path, "--data-dir", RealData.FashionMnistDirectory, "--rows", "10", "--device", "cpu");

        Assert.Equal(1, exit);
        Assert.Contains($"error: {path}: not a Gati.MLNet model", output);
        Assert.DoesNotContain("Could not find input column", output);
    }

    [Fact]
    public void TrainBaseThenEvaluate_SmallRealSubset_WritesModelAndReports()
    {
        using var temp = new TempDirectory();
        var model = temp.File("model.zip");
        var (exit, output) = CliHost.Invoke("train-base", "--data-dir", RealData.FashionMnistDirectory, "--width", "4", "--epochs", "1",
            "--train-rows", "512", "--test-rows", "200", "--batch-size", "64", "--device", "cpu", "--output", model);
        Assert.True(exit == 0, output);
        Assert.True(File.Exists(model));
        Assert.True(File.Exists(model + ".ckpt"));
        Assert.Contains("Test accuracy", output);

        var report = Path.Combine(temp.Path, "report");
        (exit, output) = CliHost.Invoke("evaluate", "--model", model, "--data-dir", RealData.FashionMnistDirectory, "--rows", "200",
            "--device", "cpu", "--report-dir", report);
        Assert.True(exit == 0, output);
        Assert.Contains("Accuracy:", output);
        Assert.Contains("Ankle boot", output);
        var confusion = File.ReadAllLines(Path.Combine(report, "confusion-matrix.csv"));
        Assert.Equal(11, confusion.Length);
        Assert.Equal(200, confusion.Skip(1).Sum(line => line.Split(',').Skip(1).Sum(int.Parse)));
        Assert.Contains("| Trouser |", File.ReadAllText(Path.Combine(report, "evaluation.md")));
    }

    [Fact]
    public void TrainBase_ProcessKilledAfterACheckpoint_ResumesAndFinishes()
    {
        using var temp = new TempDirectory();
        var model = temp.File("model.zip");
        var checkpoint = temp.File("run.ckpt");
        string[] args = ["train-base", "--data-dir", RealData.FashionMnistDirectory, "--width", "4", "--epochs", "3", "--train-rows", "1024",
            "--test-rows", "100", "--batch-size", "64", "--device", "cpu", "--threads", "1", "--output", model, "--checkpoint", checkpoint, "--resume"];

        using (var first = CliHost.Start(args))
        {
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (!File.Exists(checkpoint) && !first.HasExited && DateTime.UtcNow < deadline) Thread.Sleep(50);
            Assert.True(File.Exists(checkpoint), "no checkpoint appeared: " + (first.HasExited ? first.StandardOutput.ReadToEnd() + first.StandardError.ReadToEnd() : "timeout"));
            first.Kill(entireProcessTree: true);
            first.WaitForExit();
        }
        Assert.False(File.Exists(model));

        using var second = CliHost.Start(args);
        var output = second.StandardOutput.ReadToEnd() + second.StandardError.ReadToEnd();
        Assert.True(second.WaitForExit(TimeSpan.FromMinutes(5)));
        Assert.True(second.ExitCode == 0, output);
        Assert.Contains("epoch 1/3", output);
        Assert.Contains("(restored from checkpoint)", output);
        Assert.Contains("epoch 3/3", output);
        Assert.True(File.Exists(model));
    }

    [Fact]
    public void TrainBase_DivergingLearningRate_ExitsNonZeroNamingTheLossAndLeavesNoModel()
    {
        using var temp = new TempDirectory();
        var model = temp.File("diverged.zip");
        var (exit, output) = CliHost.Invoke("train-base", "--data-dir", RealData.FashionMnistDirectory, "--width", "4", "--epochs", "1",
            "--train-rows", "320", "--batch-size", "32", "--lr", "1e6", "--device", "cpu", "--output", model);
        Assert.True(exit != 0, output);
        Assert.Contains("diverged at epoch 1, batch", output);
        Assert.Contains("learning rate", output);
        Assert.False(File.Exists(model));
        Assert.False(File.Exists(model + ".ckpt"));
    }

    [Fact]
    public void Evaluation_ZeroRows_IsAnErrorNotZeroPercent()
    {
        // The readers refuse empty files and --rows must be positive, so an empty evaluation can only come from a
        // filter upstream or from NaN scores (which ML.NET's evaluator silently skips): it must never print 0.00 %.
        using var temp = new TempDirectory();
        var model = temp.File("model.zip");
        var (exit, output) = CliHost.Invoke("train-base", "--data-dir", RealData.FashionMnistDirectory, "--width", "4", "--epochs", "1",
            "--train-rows", "256", "--test-rows", "50", "--batch-size", "64", "--device", "cpu", "--output", model);
        Assert.True(exit == 0, output);
        var context = new Microsoft.ML.MLContext(0);
        var loaded = Gati.MLNet.GatiCatalogExtensions.Gati(context).LoadModel(model, out _);
        var data = context.Data.SkipRows(context.Data.TakeRows(Gati.MLNet.DataCatalogExtensions.LoadFashionMnist(context.Data, Gati.MLNet.Data.DatasetSplit.Test, RealData.FashionMnistDirectory), 5), 10);
        var error = Assert.Throws<InvalidOperationException>(() => Commands.Evaluation.Run(context, loaded, data));
        Assert.Contains("no rows", error.Message);
        (loaded as IDisposable)?.Dispose();
    }

    [Fact]
    public void ExportOnnx_ModelWithCaches_WritesTheGraphTheSegmentsAndUpdatesTheZip()
    {
        using var temp = new TempDirectory();
        var model = temp.File("caches.zip");
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Assets", "learned-caches-format-1.1.zip"), model);
        var onnx = temp.File("base.onnx");
        var segments = Path.Combine(temp.Path, "segments");
        var (exit, output) = CliHost.Invoke("export", "onnx", "--model", model, "--output", onnx, "--segments-dir", segments, "--update-model",
            "--verify", "--verify-rows", "300", "--data-dir", RealData.FashionMnistDirectory);
        Assert.True(exit == 0, output);
        Assert.Contains("Verified with ML.NET ApplyOnnxModel on 300 fashion-mnist test images: predicted labels identical", output);
        using (var session = new Microsoft.ML.OnnxRuntime.InferenceSession(onnx))
        {
            Assert.Equal(["Image"], session.InputNames);
            Assert.Equal(["Logits", "Score"], session.OutputNames);
            Assert.Equal("[\"T-shirt/top\",\"Trouser\",\"Pullover\",\"Dress\",\"Coat\",\"Sandal\",\"Shirt\",\"Sneaker\",\"Bag\",\"Ankle boot\"]",
                session.ModelMetadata.CustomMetadataMap["gati.classNames"]);
        }
        Assert.Equal(3, Directory.GetFiles(segments, "segment-*.onnx").Length);
        using (var single = new Microsoft.ML.OnnxRuntime.InferenceSession(Path.Combine(segments, "early-exit-single.onnx")))
        {
            Assert.Equal(["Input", "Threshold0", "Threshold1"], single.InputNames);
            Assert.Equal(["Probabilities", "Exit"], single.OutputNames);
        }
        // Re-saved in format 1.3: the base model's graph and the two caches' graphs, which segments are built from.
        using var zip = System.IO.Compression.ZipFile.OpenRead(model);
        Assert.Equal(3, zip.Entries.Count(e => e.Name.EndsWith(".onnx", StringComparison.Ordinal)));
    }

    [Fact]
    public void ExportOnnx_SegmentsOfAModelWithoutCaches_IsAnError()
    {
        using var temp = new TempDirectory();
        var model = temp.File("base.zip");
        var (exit, output) = CliHost.Invoke("train-base", "--data-dir", RealData.FashionMnistDirectory, "--width", "4", "--epochs", "1",
            "--train-rows", "256", "--test-rows", "50", "--batch-size", "64", "--device", "cpu", "--output", model);
        Assert.True(exit == 0, output);
        (exit, output) = CliHost.Invoke("export", "onnx", "--model", model, "--output", temp.File("base.onnx"), "--segments-dir", temp.File("segments"));
        Assert.Equal(1, exit);
        Assert.Contains("no servable learned caches", output);
        Assert.True(File.Exists(temp.File("base.onnx")));
    }
}
