using System.Globalization;
using Gati.MLNet.Data;
using SkiaSharp;

namespace Gati.MLNet.Inference;

/// <summary>
/// What <see cref="ImageDecoder"/> agrees to decode. Checked against the image's header before any pixel memory is
/// allocated: at most <see cref="MaxPixels"/> pixels, and no more pixels than the encoded bytes can hold (PNG:
/// <see cref="PngPixelsPerByte"/>; JPEG: <see cref="JpegPixelsPerByte"/>), so a tiny file that claims a huge size is
/// refused instead of allocated.
/// </summary>
public sealed record ImageDecodingLimits
{
    /// <summary>The smallest pixel cap <see cref="ForInput"/> gives: 2048 x 2048 (16 MB of RGBA while decoding).</summary>
    public const long DefaultMinimumPixels = 2048L * 2048;

    /// <summary>How many times a model's input pixels <see cref="ForInput"/> allows, when that is above <see cref="DefaultMinimumPixels"/>.</summary>
    public const int DefaultInputMultiple = 64;

    /// <summary>
    /// Most pixels a PNG's bytes can hold: deflate expands at most 1032-fold, and a 1-bit PNG holds 8 pixels per byte of
    /// its decompressed rows. No valid PNG exceeds it.
    /// </summary>
    public const long PngPixelsPerByte = 8 * 1032;

    /// <summary>
    /// Most pixels a JPEG's bytes hold: Huffman coding spends at least one bit on each 8x8 block's DC coefficient, so
    /// 64 pixels per bit. A baseline or progressive JPEG that codes every block stays below it; an arithmetic-coded or
    /// hand-made progressive one could exceed it and is refused (<see cref="MaxPixels"/> bounds the rest).
    /// </summary>
    public const long JpegPixelsPerByte = 64 * 8;

    private readonly long _maxPixels = DefaultMinimumPixels;

    /// <summary>Largest image decoded, in pixels (width x height from its header). Decoding takes 4 bytes per pixel.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to less than 1.</exception>
    public long MaxPixels
    {
        get => _maxPixels;
        init => _maxPixels = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(MaxPixels), value, "Must be at least 1.");
    }

    /// <summary>Where <see cref="MaxPixels"/> is set, named in refusals so that the reader knows what to change (e.g. a setting or an option name).</summary>
    public string MaxPixelsSetting { get; init; } = nameof(MaxPixels);

    /// <summary>
    /// The limits for a model that reads <paramref name="shape"/>: the larger of <see cref="DefaultMinimumPixels"/> and
    /// <see cref="DefaultInputMultiple"/> times its height x width (an image is resized to the model's input, so one far
    /// larger brings nothing but work).
    /// </summary>
    /// <param name="shape">The model's input [C, H, W].</param>
    public static ImageDecodingLimits ForInput(TensorShape shape) =>
        new() { MaxPixels = Math.Max(DefaultMinimumPixels, DefaultInputMultiple * (long)shape.Height * shape.Width) };

    /// <summary>
    /// Why an image of <paramref name="format"/> whose header claims <paramref name="width"/> x <paramref name="height"/>
    /// and whose encoding takes <paramref name="encodedBytes"/> bytes must not be decoded, or null when it may be.
    /// The one definition of these checks: <see cref="ImageDecoder"/> and the image-folder reader both use it.
    /// </summary>
    internal string? Problem(SKEncodedImageFormat format, int width, int height, long encodedBytes)
    {
        if (width < 1 || height < 1) return string.Create(CultureInfo.InvariantCulture, $"image header claims {width}x{height} pixels");
        var pixels = (long)width * height;
        long? perByte = format switch
        {
            SKEncodedImageFormat.Png => PngPixelsPerByte,
            SKEncodedImageFormat.Jpeg => JpegPixelsPerByte,
            _ => null,
        };
        if (perByte is { } ratio && pixels > ratio * encodedBytes)
            return string.Create(CultureInfo.InvariantCulture,
                $"image header claims {width}x{height} pixels, more than {encodedBytes} bytes of {format.ToString().ToUpperInvariant()} can hold (at most {ratio} pixels per byte): the header is corrupt or the data truncated");
        // Checked second: a header that lies about the size is named as such, whatever the size.
        if (pixels > MaxPixels)
            return string.Create(CultureInfo.InvariantCulture, $"image header claims {width}x{height} = {pixels} pixels, more than the {MaxPixels} allowed ({MaxPixelsSetting})");
        return null;
    }
}
