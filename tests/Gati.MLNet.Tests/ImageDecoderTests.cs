using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Tests.Infrastructure;
using SkiaSharp;

namespace Gati.MLNet.Tests;

/// <summary>
/// The library's image decoding (what the web sample and <c>gati predict</c> run): real Fashion-MNIST images decode
/// exactly as the web sample's decoder did before it moved here; sizes claimed by headers are checked against the
/// bytes and the limits before anything is allocated; truncated images are refused.
/// </summary>
public sealed class ImageDecoderTests
{
    private static readonly Lazy<byte[][]> RawTestImages = new(() => RealData.FashionMnistTestPixels(16));

    /// <summary>A gray image as RGBA (unpremultiplied), with <paramref name="alpha"/> per pixel index.</summary>
    private static byte[] Rgba(byte[] gray, Func<int, byte> alpha)
    {
        var rgba = new byte[gray.Length * 4];
        for (var i = 0; i < gray.Length; i++)
        {
            rgba[i * 4] = gray[i];
            rgba[i * 4 + 1] = (byte)(255 - gray[i]);
            rgba[i * 4 + 2] = (byte)(gray[i] / 2);
            rgba[i * 4 + 3] = alpha(i);
        }
        return rgba;
    }

    private static byte[] RealPng(int index) => ImageFiles.Encode(28, 28, Rgba(RawTestImages.Value[index], _ => 255), png: true);

    private static byte[] RealJpeg(int index) => ImageFiles.Encode(28, 28, Rgba(RawTestImages.Value[index], _ => 255), png: false);

    [Fact]
    public void Decode_RealImagesAsPngAndJpeg_MatchesTheWebSamplesEarlierDecoderExactly()
    {
        (TensorShape Shape, ChannelNormalization? Normalization)[] models =
        [
            (new TensorShape(1, 28, 28), ChannelNormalization.FashionMnist),
            (new TensorShape(1, 14, 14), null),
            (new TensorShape(3, 32, 32), ChannelNormalization.Cifar10),
            (new TensorShape(1, 56, 56), null),
        ];
        var compared = 0;
        for (var i = 0; i < RawTestImages.Value.Length; i++)
        {
            // Opaque PNG and JPEG, and a PNG with transparency (composited over black).
            byte[][] files =
            [
                RealPng(i), RealJpeg(i),
                ImageFiles.Encode(28, 28, Rgba(RawTestImages.Value[i], p => (byte)(p * 7 % 256)), png: true),
            ];
            foreach (var file in files)
                foreach (var (shape, normalization) in models)
                {
                    var expected = EarlierDecoder(file, shape, normalization);
                    Assert.Equal(expected, ImageDecoder.Decode(file, shape, normalization));
                    compared++;
                }
        }
        Assert.Equal(16 * 3 * 4, compared);
    }

    [Fact]
    public void Decode_TinyPngClaiming4000x4000_IsRefusedForItsByteCount()
    {
        var png = ImageFiles.TinyPngClaiming(4000, 4000);
        Assert.InRange(png.Length, 60, 80);
        // The earlier decoder decoded it (64 MB of pixels) and answered with the one row it holds.
        Assert.Equal(784, EarlierDecoder(png, new TensorShape(1, 28, 28), null).Length);

        var error = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(png, new TensorShape(1, 28, 28), null));
        Assert.Equal($"The image header claims 4000x4000 pixels, more than {png.Length} bytes of PNG can hold (at most 8256 pixels per byte): the header is corrupt or the data truncated.",
            error.Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Decode_TruncatedImage_IsRefusedAsTruncated(bool png)
    {
        var half = ImageFiles.Truncated(png ? RealPng(3) : RealJpeg(3));
        // The earlier decoder filled the missing rows in and answered.
        Assert.Equal(784, EarlierDecoder(half, new TensorShape(1, 28, 28), null).Length);

        var error = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(half, new TensorShape(1, 28, 28), ChannelNormalization.FashionMnist));
        Assert.StartsWith($"The image is truncated: its {(png ? "PNG" : "JPEG")} data ends before its last row", error.Message);
    }

    [Fact]
    public void Decode_ImageAboveMaxPixels_IsRefusedNamingTheSetting()
    {
        var png = ImageFiles.Encode(64, 64, new byte[64 * 64 * 4], png: true);
        var limits = new ImageDecodingLimits { MaxPixels = 4095, MaxPixelsSetting = "Gati:MaxImagePixels" };
        var error = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(png, new TensorShape(1, 28, 28), null, limits));
        Assert.Equal("The image header claims 64x64 = 4096 pixels, more than the 4095 allowed (Gati:MaxImagePixels).", error.Message);
        Assert.Equal(784, ImageDecoder.Decode(png, new TensorShape(1, 28, 28), null, limits with { MaxPixels = 4096 }).Length);
    }

    [Fact]
    public void Decode_JpegClaimingMoreThanItsBytesHold_IsRefused()
    {
        var jpeg = ImageFiles.WithClaimedSize(RealJpeg(0), 3000, 3000);
        var error = Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(jpeg, new TensorShape(1, 28, 28), null, new ImageDecodingLimits { MaxPixels = 10_000_000 }));
        Assert.Contains($"claims 3000x3000 pixels, more than {jpeg.Length} bytes of JPEG can hold (at most 512 pixels per byte)", error.Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Decode_UniformImageOfTheLargestDefaultSize_IsWithinTheRatiosAndDecodes(bool png)
    {
        // As compressible as real images get: one colour, 2048 x 2048, written by an ordinary encoder.
        var file = ImageFiles.Encode(2048, 2048, Enumerable.Repeat((byte)255, 2048 * 2048 * 4).ToArray(), png);
        var values = ImageDecoder.Decode(file, new TensorShape(1, 28, 28), null);
        Assert.All(values, v => Assert.Equal(1f, v, 2));
    }

    [Fact]
    public void Decode_NotAnImageOrAnotherFormat_IsInvalidData()
    {
        Assert.StartsWith("Not a readable PNG or JPEG image", Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode("hello"u8, new TensorShape(1, 28, 28), null)).Message);
        Assert.StartsWith("The image is empty", Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode([], new TensorShape(1, 28, 28), null)).Message);
        using var bitmap = new SKBitmap(4, 4);
        using var webp = SKImage.FromBitmap(bitmap).Encode(SKEncodedImageFormat.Webp, 90);
        Assert.Equal("Images must be PNG or JPEG (got Webp).", Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(webp.ToArray(), new TensorShape(1, 28, 28), null)).Message);
        Assert.Throws<ArgumentException>(() => ImageDecoder.Decode(RealPng(0), new TensorShape(2, 28, 28), null));
    }

    [Fact]
    public void ForInput_SmallAndLargeInputs_GivesTheFloorOr64TimesTheInput()
    {
        Assert.Equal(2048L * 2048, ImageDecodingLimits.ForInput(new TensorShape(1, 28, 28)).MaxPixels);
        Assert.Equal(2048L * 2048, ImageDecodingLimits.ForInput(new TensorShape(3, 224, 224)).MaxPixels);
        Assert.Equal(64L * 512 * 512, ImageDecodingLimits.ForInput(new TensorShape(3, 512, 512)).MaxPixels);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ImageDecodingLimits { MaxPixels = 0 });
    }

    /// <summary>
    /// The web sample's decoder as it was before decoding moved into the library (samples/Gati.Samples.WebApi/ImageDecoder.cs
    /// at commit 6db3a81), verbatim but for the error messages: the reference that decoded pixels must not change.
    /// </summary>
    internal static float[] EarlierDecoder(ReadOnlySpan<byte> encoded, TensorShape shape, ChannelNormalization? normalization)
    {
        using var data = SKData.CreateCopy(encoded);
        using var codec = SKCodec.Create(data) ?? throw new InvalidDataException("not readable");
        if (codec.EncodedFormat is not (SKEncodedImageFormat.Png or SKEncodedImageFormat.Jpeg)) throw new InvalidDataException("format");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Premul);
        if (info.Width < 1 || info.Height < 1 || (long)info.Width * info.Height > 16_000_000) throw new InvalidDataException("size");
        using var decoded = new SKBitmap(info);
        var result = codec.GetPixels(info, decoded.GetPixels());
        if (result is not (SKCodecResult.Success or SKCodecResult.IncompleteInput)) throw new InvalidDataException(result.ToString());
        using var resized = decoded.Width == shape.Width && decoded.Height == shape.Height
            ? decoded.Copy()
            : decoded.Resize(new SKImageInfo(shape.Width, shape.Height, SKColorType.Rgba8888, SKAlphaType.Premul), new SKSamplingOptions(SKCubicResampler.Mitchell))
              ?? throw new InvalidDataException("resize");
        var pixels = resized.GetPixelSpan();
        var plane = shape.Height * shape.Width;
        var values = new float[shape.Size];
        for (var i = 0; i < plane; i++)
        {
            float r = pixels[i * 4], g = pixels[i * 4 + 1], b = pixels[i * 4 + 2];
            if (shape.Channels == 1)
            {
                values[i] = (0.299f * r + 0.587f * g + 0.114f * b) / 255f;
            }
            else
            {
                values[i] = r / 255f;
                values[plane + i] = g / 255f;
                values[2 * plane + i] = b / 255f;
            }
        }
        if (normalization is null) return values;
        var result2 = new float[values.Length];
        normalization.Normalize(values, result2);
        return result2;
    }
}

/// <summary>Decoding a hostile header costs no pixel memory (resident memory, so this runs alone).</summary>
[Collection(NativeMemoryCollection.Name)]
public sealed class ImageDecoderMemoryTests
{
    [Fact]
    public async Task Decode_TinyPngsClaiming4000x4000_AllocateNoPixelMemory()
    {
        var png = ImageFiles.TinyPngClaiming(4000, 4000);
        var shape = new TensorShape(1, 28, 28);
        // Warm the decoder's code paths first, so that what is measured is the refusals alone.
        Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(png, shape, null));
        var memory = await PeakMemory.MeasureAsync(() =>
        {
            // Four threads at once, as a server would: the earlier decoder took 64 MB per image for each of them.
            Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ => Assert.Throws<InvalidDataException>(() => ImageDecoder.Decode(png, shape, null)));
            return Task.CompletedTask;
        });
        Assert.True(memory.PeakGrowthBytes < 16L << 20, memory.ToString());
    }
}
