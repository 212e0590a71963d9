using Gati.MLNet.Data;
using SkiaSharp;

namespace Gati.MLNet.Inference;

/// <summary>
/// Turns an encoded image (PNG or JPEG) into a model's input, the way the training images were prepared: decode,
/// composite transparency over black, resize to the model's size (Mitchell cubic), grayscale (BT.601 luma) for
/// one-channel models, scale to [0, 1], normalise per channel. The web sample and <c>gati predict</c> both decode
/// through it, so a file gets the same prediction from either.
/// </summary>
/// <remarks>
/// Hostile input is refused before it costs memory: the header's width x height is checked against
/// <see cref="ImageDecodingLimits"/> (a pixel cap, and no more pixels than the encoded bytes can hold) before any pixel
/// buffer is allocated, and an image whose data ends early (truncated) is refused rather than decoded with its missing
/// rows filled in. Thread-safe; callers that decode many images at once bound how many run together (each takes
/// 4 bytes per declared pixel while it runs).
/// </remarks>
public static class ImageDecoder
{
    /// <summary>The model input for <paramref name="encoded"/>: <paramref name="shape"/>.Size values, planar [C, H, W].</summary>
    /// <param name="encoded">The bytes of a PNG or JPEG file.</param>
    /// <param name="shape">The model's input: 1 (grayscale) or 3 (RGB) channels, any height and width.</param>
    /// <param name="normalization">The model's input normalisation (<see cref="EarlyExitPredictionEngine{TInput, TOutput}.InputNormalization"/>), or null for pixels in [0, 1].</param>
    /// <param name="limits">What may be decoded; null: <see cref="ImageDecodingLimits.ForInput"/> of <paramref name="shape"/>.</param>
    /// <exception cref="InvalidDataException">The bytes are not a PNG or JPEG, are corrupt or truncated, or claim a size the limits refuse; the message says which.</exception>
    /// <exception cref="ArgumentException"><paramref name="shape"/> has neither 1 nor 3 channels.</exception>
    public static float[] Decode(ReadOnlySpan<byte> encoded, TensorShape shape, ChannelNormalization? normalization, ImageDecodingLimits? limits = null)
    {
        shape.Validate("The model input");
        if (shape.Channels is not (1 or 3))
            throw new ArgumentException($"Images decode to 1 (grayscale) or 3 (RGB) channels; the model reads {shape}.", nameof(shape));
        limits ??= ImageDecodingLimits.ForInput(shape);
        if (encoded.IsEmpty) throw new InvalidDataException("The image is empty.");

        using var data = SKData.CreateCopy(encoded);
        using var codec = SKCodec.Create(data) ?? throw new InvalidDataException("Not a readable PNG or JPEG image.");
        if (codec.EncodedFormat is not (SKEncodedImageFormat.Png or SKEncodedImageFormat.Jpeg))
            throw new InvalidDataException($"Images must be PNG or JPEG (got {codec.EncodedFormat}).");
        var (width, height) = (codec.Info.Width, codec.Info.Height);
        // Before anything is sized from the header: a 69-byte PNG may claim 4000x4000 (64 MB to decode).
        if (limits.Problem(codec.EncodedFormat, width, height, encoded.Length) is { } problem)
            throw new InvalidDataException($"The {problem}.");

        // Premultiplied RGBA: colour composited over black.
        var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul);
        using var decoded = new SKBitmap(info);
        var result = codec.GetPixels(info, decoded.GetPixels());
        if (result == SKCodecResult.IncompleteInput)
            throw new InvalidDataException($"The image is truncated: its {codec.EncodedFormat.ToString().ToUpperInvariant()} data ends before its last row.");
        if (result != SKCodecResult.Success)
            throw new InvalidDataException($"The image could not be decoded ({result}).");
        // An image already of the model's size is read as decoded (no copy).
        using var resized = width == shape.Width && height == shape.Height
            ? null
            : decoded.Resize(new SKImageInfo(shape.Width, shape.Height, SKColorType.Rgba8888, SKAlphaType.Premul), new SKSamplingOptions(SKCubicResampler.Mitchell))
              ?? throw new InvalidDataException("The image could not be resized.");
        var pixels = (resized ?? decoded).GetPixelSpan();
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
        var normalized = new float[values.Length];
        normalization.Normalize(values, normalized);
        return normalized;
    }
}
