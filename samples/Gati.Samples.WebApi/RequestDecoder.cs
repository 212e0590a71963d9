using System.Text.Json;
using Gati.MLNet.Data;
using Gati.MLNet.Models;
using SkiaSharp;

namespace Gati.Samples.WebApi;

/// <summary>
/// Turns uploaded images and pixel arrays into the model's input, the way the training images were prepared:
/// decode (PNG or JPEG), composite transparency over black, resize to the model's size, grayscale (BT.601 luma) for
/// one-channel models, scale to [0, 1], normalise per channel.
/// </summary>
public static class ImageDecoder
{
    private static readonly JsonSerializerOptions JsonOptions = new(JsonSerializerDefaults.Web);

    /// <summary>
    /// The model input for a request body of <paramref name="mediaType"/> (image/png, image/jpeg or application/json).
    /// Throws <see cref="InvalidDataException"/> for a body that cannot be decoded and <see cref="ArgumentException"/> for
    /// one that decodes to the wrong input; nothing else.
    /// </summary>
    public static float[] FromBody(string mediaType, ReadOnlySpan<byte> body, TensorShape shape, ChannelNormalization? normalization) => mediaType switch
    {
        "application/json" => FromPixels(ParseJson(body), shape, normalization),
        "image/png" or "image/jpeg" => FromEncoded(body, shape, normalization),
        _ => throw new ArgumentException($"Unsupported media type '{mediaType}'.", nameof(mediaType)),
    };

    private static float[]? ParseJson(ReadOnlySpan<byte> body)
    {
        try
        {
            return JsonSerializer.Deserialize<PixelRequest>(body, JsonOptions)?.Pixels;
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"The JSON body is not valid: {ex.Message}", ex);
        }
    }

    /// <summary>Decodes an encoded image; throws <see cref="InvalidDataException"/> when it is not a readable PNG or JPEG.</summary>
    public static float[] FromEncoded(ReadOnlySpan<byte> encoded, TensorShape shape, ChannelNormalization? normalization)
    {
        using var data = SKData.CreateCopy(encoded);
        using var codec = SKCodec.Create(data) ?? throw new InvalidDataException("The body is not a readable PNG or JPEG image.");
        if (codec.EncodedFormat is not (SKEncodedImageFormat.Png or SKEncodedImageFormat.Jpeg))
            throw new InvalidDataException($"Images must be PNG or JPEG (got {codec.EncodedFormat}).");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Premul);
        if (info.Width < 1 || info.Height < 1 || (long)info.Width * info.Height > 16_000_000)
            throw new InvalidDataException($"Image size {info.Width}x{info.Height} is out of range.");
        using var decoded = new SKBitmap(info);
        var result = codec.GetPixels(info, decoded.GetPixels());
        if (result is not (SKCodecResult.Success or SKCodecResult.IncompleteInput))
            throw new InvalidDataException($"The image could not be decoded ({result}).");
        using var resized = decoded.Width == shape.Width && decoded.Height == shape.Height
            ? decoded.Copy()
            : decoded.Resize(new SKImageInfo(shape.Width, shape.Height, SKColorType.Rgba8888, SKAlphaType.Premul), new SKSamplingOptions(SKCubicResampler.Mitchell))
              ?? throw new InvalidDataException("The image could not be resized.");
        var pixels = resized.GetPixelSpan();
        var plane = shape.Height * shape.Width;
        var values = new float[shape.Size];
        for (var i = 0; i < plane; i++)
        {
            // Premultiplied RGBA: colour already composited over black.
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
        return Normalize(values, normalization);
    }

    /// <summary>Raw 0-255 pixels, planar; throws <see cref="ArgumentException"/> naming what is wrong.</summary>
    public static float[] FromPixels(float[]? pixels, TensorShape shape, ChannelNormalization? normalization)
    {
        if (pixels is null) throw new ArgumentException("The JSON body needs a \"pixels\" array.");
        if (pixels.Length != shape.Size)
            throw new ArgumentException($"\"pixels\" has {pixels.Length} values; the model reads {shape} = {shape.Size} (planar, 0-255).");
        var values = new float[pixels.Length];
        for (var i = 0; i < pixels.Length; i++)
        {
            var p = pixels[i];
            if (!float.IsFinite(p) || p < 0 || p > 255) throw new ArgumentException($"\"pixels\"[{i}] is {p}; pixels must be numbers from 0 to 255.");
            values[i] = p / 255f;
        }
        return Normalize(values, normalization);
    }

    private static float[] Normalize(float[] values, ChannelNormalization? normalization)
    {
        if (normalization is null) return values;
        var result = new float[values.Length];
        normalization.Normalize(values, result);
        return result;
    }
}
