using Gati.MLNet.Data;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Training;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>
/// Two small real early-exit models for serving tests (width-8 ResNet-18 on 1,500 Fashion-MNIST images, conv caches on
/// layers 3 and 6), saved as model zips: <see cref="First"/> and <see cref="Second"/> (different seeds), plus the
/// first test images as normalised vectors and as raw bytes; and, trained on first use, <see cref="Other"/>: a model
/// that reads other images (3 classes, RGB 16x16).
/// </summary>
public sealed class ServingModels : IDisposable
{
    private readonly TempDirectory _temp = new();
    private readonly Lazy<string> _other;

    public ServingModels()
    {
        _other = new Lazy<string>(() => TrainOther(RealData.FashionMnistDirectory, _temp.File("other.zip"), _temp.File("other-images")));
        var directory = RealData.FashionMnistDirectory;
        First = Train(directory, seed: 1, _temp.File("first.zip"));
        Second = Train(directory, seed: 2, _temp.File("second.zip"));
        var context = new MLContext(0);
        var test = context.Data.TakeRows(context.Data.LoadFashionMnist(DatasetSplit.Test, directory), 64);
        using var cursor = test.GetRowCursor(test.Schema);
        var getter = cursor.GetGetter<VBuffer<float>>(test.Schema["Image"]);
        VBuffer<float> value = default;
        var images = new List<float[]>();
        while (cursor.MoveNext())
        {
            getter(ref value);
            images.Add(value.DenseValues().ToArray());
        }
        Images = images;
        RawImages = images.Select(i => i.Select(v => (byte)Math.Clamp(Math.Round((v * 0.3530f + 0.2860f) * 255), 0, 255)).ToArray()).ToArray();
    }

    public string First { get; }

    public string Second { get; }

    /// <summary>
    /// A model with another input shape and class count than <see cref="First"/>: Fashion-MNIST images of its first three
    /// classes written as PNG files in class folders (a, b, c) and read back as RGB 16x16 (trained on first use).
    /// </summary>
    public string Other => _other.Value;

    public string Directory => _temp.Path;

    /// <summary>Normalised 1x28x28 test images.</summary>
    public IReadOnlyList<float[]> Images { get; }

    /// <summary>The same images as raw 0-255 pixels.</summary>
    public IReadOnlyList<byte[]> RawImages { get; }

    private static string Train(string directory, int seed, string path)
    {
        var context = new MLContext(seed);
        var train = context.Data.TakeRows(context.Data.LoadFashionMnist(DatasetSplit.Train, directory), 1500);
        var pipeline = context.Gati().ResNet(new ResNetTrainer.Options { BaseWidth = 8, Epochs = 1, BatchSize = 64, LearningRate = 0.05, Device = "cpu", Seed = seed })
            .Append(context.Gati().LearnedCaches([3, 6], PredictorArchitecture.Conv(), new LearnedCachesEstimator.Options
            {
                Predictor = new LearnedCachesEstimator.PredictorOptions { Epochs = 1 },
                Selector = new SelectorTrainingSettings { Epochs = 5, TargetPrecision = 0.95 },
                HeldOutRows = 400,
                Device = "cpu",
                Seed = seed,
            }));
        var model = pipeline.Fit(train);
        context.Gati().SaveModel(model, train.Schema, path);
        foreach (var component in model) (component as IDisposable)?.Dispose();
        return path;
    }

    private static string TrainOther(string directory, string path, string folder)
    {
        var context = new MLContext(3);
        var raw = context.Data.LoadFashionMnist(DatasetSplit.Train, directory, ChannelNormalization.Identity(1));
        using (var cursor = raw.GetRowCursor(raw.Schema))
        {
            var image = cursor.GetGetter<VBuffer<float>>(raw.Schema["Image"]);
            var label = cursor.GetGetter<uint>(raw.Schema["Label"]);
            VBuffer<float> pixels = default;
            uint key = 0;
            var written = 0;
            while (written < 600 && cursor.MoveNext())
            {
                label(ref key);
                if (key > 3) continue;
                image(ref pixels);
                var classFolder = System.IO.Path.Combine(folder, ((char)('a' + key - 1)).ToString());
                System.IO.Directory.CreateDirectory(classFolder);
                using var bitmap = new SkiaSharp.SKBitmap(new SkiaSharp.SKImageInfo(28, 28, SkiaSharp.SKColorType.Gray8, SkiaSharp.SKAlphaType.Opaque));
                System.Runtime.InteropServices.Marshal.Copy(pixels.DenseValues().Select(v => (byte)Math.Round(v * 255)).ToArray(), 0, bitmap.GetPixels(), 784);
                using var png = SkiaSharp.SKImage.FromBitmap(bitmap).Encode(SkiaSharp.SKEncodedImageFormat.Png, 100);
                File.WriteAllBytes(System.IO.Path.Combine(classFolder, $"{written++:D4}.png"), png.ToArray());
            }
        }
        var train = context.Data.LoadImageFolder(folder, new ImageFolderOptions { Width = 16, Height = 16 });
        var pipeline = context.Gati().ResNet(new ResNetTrainer.Options { BaseWidth = 8, Epochs = 1, BatchSize = 64, LearningRate = 0.05, Device = "cpu", Seed = 3 })
            .Append(context.Gati().LearnedCaches([3, 6], PredictorArchitecture.Conv(), new LearnedCachesEstimator.Options
            {
                Predictor = new LearnedCachesEstimator.PredictorOptions { Epochs = 1 },
                Selector = new SelectorTrainingSettings { Epochs = 5, TargetPrecision = 0.95 },
                HeldOutRows = 200,
                Device = "cpu",
                Seed = 3,
            }));
        var model = pipeline.Fit(train);
        context.Gati().SaveModel(model, train.Schema, path);
        foreach (var component in model) (component as IDisposable)?.Dispose();
        return path;
    }

    public void Dispose() => _temp.Dispose();
}
