using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.ML;
using Microsoft.ML.Data;
using SkiaSharp;

namespace Gati.MLNet.Tests;

public sealed class ImageFolderTests : IDisposable
{
    private readonly TempDirectory _temp = new();
    private readonly MLContext _ml = new(seed: 1);

    public void Dispose() => _temp.Dispose();

    private static void WritePng(string path, int width, int height, SKColor color)
    {
        using var bitmap = new SKBitmap(width, height);
        bitmap.Erase(color);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        using var file = File.Create(path);
        data.SaveTo(file);
    }

    private void WriteFolder()
    {
        WritePng(Path.Combine(_temp.Sub("red"), "a.png"), 40, 20, new SKColor(255, 0, 0));
        WritePng(Path.Combine(_temp.Sub("red"), "b.png"), 10, 10, new SKColor(200, 0, 0));
        WritePng(Path.Combine(_temp.Sub("blue"), "c.png"), 16, 16, new SKColor(0, 0, 255));
        File.WriteAllText(Path.Combine(_temp.Sub("blue"), "notes.txt"), "not an image, ignored by extension");
    }

    [Fact]
    public void LoadImageFolder_ClassSubfolders_GiveNormalisedPlanarImagesAndNamedKeys()
    {
        WriteFolder();
        var normalization = ChannelNormalization.Cifar10;
        var data = _ml.Data.LoadImageFolder(_temp.Path, new ImageFolderOptions { Width = 8, Height = 8, Normalization = normalization });

        Assert.Equal([3, 8, 8], ((VectorDataViewType)data.Schema["Image"].Type).Dimensions.ToArray());
        VBuffer<ReadOnlyMemory<char>> names = default;
        data.Schema["Label"].Annotations.GetValue("KeyValues", ref names);
        Assert.Equal(["blue", "red"], names.DenseValues().Select(n => n.ToString()));

        var rows = _ml.Data.CreateEnumerable<Row>(data, reuseRowObject: false).ToArray();
        Assert.Equal(3, rows.Length);
        var blue = rows.Single(r => r.Label == 1);
        Assert.Equal((0 - normalization.Mean[0]) / normalization.Std[0], blue.Image[0], 4);
        Assert.Equal((1 - normalization.Mean[2]) / normalization.Std[2], blue.Image[2 * 64 + 10], 4);
        var red = rows.First(r => r.Label == 2 && r.ImagePath.EndsWith("a.png", StringComparison.Ordinal));
        Assert.Equal((1 - normalization.Mean[0]) / normalization.Std[0], red.Image[63], 4);
    }

    [Fact]
    public void LoadImageFolder_Grayscale_HasOneChannel()
    {
        WriteFolder();
        var data = _ml.Data.LoadImageFolder(_temp.Path, new ImageFolderOptions { Width = 6, Height = 5, Grayscale = true });
        Assert.Equal([1, 5, 6], ((VectorDataViewType)data.Schema["Image"].Type).Dimensions.ToArray());
        var rows = _ml.Data.CreateEnumerable<Row>(data, reuseRowObject: false).ToArray();
        Assert.All(rows, r => Assert.InRange(r.Image.Max(), 0.05f, 1f));
    }

    [Fact]
    public void LoadImageFolder_CorruptImage_ErrorNamesTheFile()
    {
        WriteFolder();
        var corrupt = Path.Combine(_temp.Path, "red", "c-corrupt.png");
        File.WriteAllBytes(corrupt, [0x89, 0x50, 0x4e, 0x47, 1, 2, 3, 4, 5]);
        var data = _ml.Data.LoadImageFolder(_temp.Path, new ImageFolderOptions { Width = 8, Height = 8 });
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.CreateEnumerable<Row>(data, reuseRowObject: false).ToArray());
        Assert.Equal(corrupt, error.FilePath);
        Assert.Contains("cannot read image", error.Message);
    }

    [Fact]
    public void LoadImageFolder_OneClassOnly_IsRejected()
    {
        WritePng(Path.Combine(_temp.Sub("only"), "a.png"), 4, 4, SKColors.White);
        var error = Assert.Throws<ArgumentException>(() => _ml.Data.LoadImageFolder(_temp.Path));
        Assert.Contains("at least two class sub-folders", error.Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void LoadImageFolder_HeaderClaimsFarMoreThanTheFileHolds_FailsNamingTheFileBeforeDecoding(bool png)
    {
        WriteFolder();
        // A 4x4 image whose header (PNG: with a valid CRC) claims 30000x30000: decoding it would take 3.6 GB.
        var hostile = Path.Combine(_temp.Path, "red", png ? "huge.png" : "huge.jpg");
        File.WriteAllBytes(hostile, ImageFiles.WithClaimedSize(ImageFiles.Encode(4, 4, new byte[64], png), 30000, 30000));
        var data = _ml.Data.LoadImageFolder(_temp.Path, new ImageFolderOptions { Width = 8, Height = 8 });

        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.CreateEnumerable<Row>(data, reuseRowObject: false).ToArray());

        Assert.Equal(hostile, error.FilePath);
        Assert.Contains("30000x30000", error.Problem);
    }

    [Fact]
    public void LoadImageFolder_MaxImagePixels_RefusesLargerImagesAndKeepsSmallerOnes()
    {
        WriteFolder(); // 40x20, 10x10 and 16x16 images
        var options = new ImageFolderOptions { Width = 8, Height = 8, MaxImagePixels = 256 };
        var error = Assert.Throws<DatasetFormatException>(() => _ml.Data.CreateEnumerable<Row>(_ml.Data.LoadImageFolder(_temp.Path, options), false).ToArray());
        Assert.EndsWith("a.png", error.FilePath);
        Assert.Contains("40x20", error.Problem);

        File.Delete(Path.Combine(_temp.Path, "red", "a.png"));
        Assert.Equal(2, _ml.Data.CreateEnumerable<Row>(_ml.Data.LoadImageFolder(_temp.Path, options), false).Count());
    }

    private sealed class Row
    {
        public string ImagePath { get; set; } = "";

        public uint Label { get; set; }

        [VectorType]
        public float[] Image { get; set; } = [];
    }
}
