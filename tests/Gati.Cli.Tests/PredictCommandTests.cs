using System.Text.Json;
using Gati.MLNet;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.Cli.Tests;

/// <summary>
/// <c>gati predict</c> on real Fashion-MNIST test images written as PNG files, with a small trained model that has two
/// caches (the 1.1-format test asset): answers as the engine does on the dataset's own pixels, prints one line per
/// image, and gives a bad file its own error line.
/// </summary>
public sealed class PredictCommandTests
{
    private static string Model => Path.Combine(AppContext.BaseDirectory, "Assets", "learned-caches-format-1.1.zip");

    private const int Images = 12;

    /// <summary>The first test images as class folders of PNG files ({class}/{row:D6}.png).</summary>
    private static string ExportImages(TempDirectory temp)
    {
        var folder = temp.Sub("images");
        new MLContext(0).Data.ExportFashionMnistImages(folder, DatasetSplit.Test, Images, dataDirectory: RealData.FashionMnistDirectory);
        return folder;
    }

    /// <summary>The engine's answers on the dataset's own pixels (no PNG in between), by row.</summary>
    private static EarlyExitPrediction[] Expected(string? modelPath = null)
    {
        var context = new MLContext(0);
        var model = context.Gati().LoadModel(modelPath ?? Model, out _);
        try
        {
            using var engine = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(model);
            var test = context.Data.TakeRows(context.Data.LoadFashionMnist(DatasetSplit.Test, RealData.FashionMnistDirectory, ChannelNormalization.Identity(1)), Images);
            return context.Data.CreateEnumerable<Row>(test, reuseRowObject: false)
                .Select(r => engine.Predict(ImageInput.FromPixels(r.Image, engine.InputNormalization)))
                .ToArray();
        }
        finally
        {
            Infrastructure.LoadedModel.Dispose(model);
        }
    }

    private sealed class Row
    {
        [VectorType(784)]
        public float[] Image { get; set; } = [];
    }

    private static JsonElement[] JsonLines(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToArray();

    [Fact]
    public void Predict_FolderAsJsonAndAsText_AnswersLikeTheEngineOnTheDatasetsPixels()
    {
        using var temp = new TempDirectory();
        var folder = ExportImages(temp);
        var expected = Expected();
        Assert.Contains(expected, p => p.ExitLayer > 0);

        var (exit, output) = CliHost.Invoke("predict", "--model", Model, "--folder", folder, "--json", "--device", "cpu");
        Assert.True(exit == 0, output);
        // Standard output holds the JSON lines and nothing else.
        var lines = JsonLines(output);
        Assert.Equal(Images, lines.Length);
        foreach (var line in lines)
        {
            var file = line.GetProperty("file").GetString()!;
            var row = int.Parse(Path.GetFileNameWithoutExtension(file), System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(expected[row].PredictedClass, line.GetProperty("label").GetString());
            Assert.Equal(expected[row].PredictedLabel, line.GetProperty("labelKey").GetUInt32());
            Assert.Equal(expected[row].ExitLayer, line.GetProperty("exitLayer").GetInt32());
            Assert.Equal(expected[row].ExitLayer > 0, line.GetProperty("exitedEarly").GetBoolean());
            Assert.Equal(expected[row].Score[(int)expected[row].PredictedLabel - 1], line.GetProperty("score").GetSingle(), 4);
            Assert.True(line.GetProperty("latencyMs").GetDouble() > 0);
            Assert.False(line.TryGetProperty("error", out _));
        }
        // In path order: class folder, then file.
        Assert.Equal(lines.Select(l => l.GetProperty("file").GetString()).Order(StringComparer.Ordinal), lines.Select(l => l.GetProperty("file").GetString()));

        (exit, output) = CliHost.Invoke("predict", "--model", Model, "--folder", folder, "--device", "cpu");
        Assert.True(exit == 0, output);
        var first = Directory.GetFiles(folder, "000000.png", SearchOption.AllDirectories).Single();
        var exitText = expected[0].ExitLayer > 0 ? $"exit layer {expected[0].ExitLayer}," : "exit layer 0 (full model),";
        Assert.Contains($"{first}: {expected[0].PredictedClass} (", output);
        Assert.Contains(exitText, output);
        Assert.Contains($"{Images} images: {Images} predicted ({expected.Count(p => p.ExitLayer > 0)} exited early); mean latency ", output);
    }

    [Fact]
    public void Predict_BaseModelThatRecordsItsNormalisation_NormalisesLikeTrainingAndAnswersWithTheFullModel()
    {
        using var temp = new TempDirectory();
        var model = temp.File("base.zip");
        var (exit, output) = CliHost.Invoke("train-base", "--data-dir", RealData.FashionMnistDirectory, "--width", "4", "--epochs", "1",
            "--train-rows", "256", "--test-rows", "50", "--batch-size", "64", "--device", "cpu", "--output", model);
        Assert.True(exit == 0, output);
        var expected = Expected(model);

        (exit, output) = CliHost.Invoke("predict", "--model", model, "--folder", ExportImages(temp), "--json", "--device", "cpu");
        Assert.True(exit == 0, output);
        var lines = JsonLines(output);
        Assert.Equal(Images, lines.Length);
        foreach (var line in lines)
        {
            var row = int.Parse(Path.GetFileNameWithoutExtension(line.GetProperty("file").GetString()!), System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(0, line.GetProperty("exitLayer").GetInt32());
            // The scores too: an image left unnormalised would still often get the same label.
            Assert.Equal(expected[row].Score[(int)expected[row].PredictedLabel - 1], line.GetProperty("score").GetSingle(), 3);
            Assert.Equal(expected[row].PredictedClass, line.GetProperty("label").GetString());
        }
    }

    [Fact]
    public void Predict_BadFilesAmongGoodOnes_GetAnErrorLineEachAndExitCode1()
    {
        using var temp = new TempDirectory();
        var good = Directory.GetFiles(ExportImages(temp), "000000.png", SearchOption.AllDirectories).Single();
        var truncated = temp.File("truncated.png");
        File.WriteAllBytes(truncated, ImageFiles.Truncated(File.ReadAllBytes(good)));
        var hostile = temp.File("hostile.png");
        File.WriteAllBytes(hostile, ImageFiles.TinyPngClaiming(4000, 4000));
        var text = temp.File("text.png");
        File.WriteAllText(text, "hello");
        var missing = temp.File("missing.png");

        var (exit, output) = CliHost.Invoke("predict", "--model", Model, truncated, good, hostile, text, missing, "--device", "cpu");
        Assert.Equal(1, exit);
        Assert.Contains($"{truncated}: error: The image is truncated: its PNG data ends before its last row.", output);
        Assert.Contains($"{hostile}: error: The image header claims 4000x4000 pixels, more than ", output);
        Assert.Contains($"{text}: error: Not a readable PNG or JPEG image.", output);
        Assert.Contains($"{missing}: error: Could not find file", output);
        Assert.Contains($"{good}: ", output);
        Assert.Contains("5 images: 1 predicted (", output);
        Assert.Contains(", 4 failed.", output);

        (exit, output) = CliHost.Invoke("predict", "--model", Model, good, truncated, "--json", "--device", "cpu");
        Assert.Equal(1, exit);
        var lines = JsonLines(output);
        Assert.Equal(2, lines.Length);
        Assert.False(lines[0].TryGetProperty("error", out _));
        Assert.Equal(truncated, lines[1].GetProperty("file").GetString());
        Assert.StartsWith("The image is truncated", lines[1].GetProperty("error").GetString());
        Assert.False(lines[1].TryGetProperty("label", out _));

        (exit, output) = CliHost.Invoke("predict", "--model", Model, good, "--max-image-pixels", "700", "--device", "cpu");
        Assert.Equal(1, exit);
        Assert.Contains($"{good}: error: The image header claims 28x28 = 784 pixels, more than the 700 allowed (--max-image-pixels).", output);
    }

    [Fact]
    public void Predict_NothingToPredict_IsAnErrorBeforeTheModelLoads()
    {
        using var temp = new TempDirectory();
        var (exit, output) = CliHost.Invoke("predict", "--model", temp.File("model.zip"));
        Assert.Equal(1, exit);
        Assert.Contains("Name image files, or a folder with --folder.", output);

        (exit, output) = CliHost.Invoke("predict", "--model", temp.File("model.zip"), "--folder", temp.File("nowhere"));
        Assert.Equal(1, exit);
        Assert.Contains($"error: --folder: folder '{temp.File("nowhere")}' does not exist.", output);

        (exit, output) = CliHost.Invoke("predict", "--model", temp.File("model.zip"), "--folder", temp.Sub("empty"));
        Assert.Equal(1, exit);
        Assert.Contains("holds no .png, .jpg, .jpeg files.", output);
    }
}
