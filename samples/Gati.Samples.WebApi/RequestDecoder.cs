using System.Globalization;
using System.Text.Json;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;

namespace Gati.Samples.WebApi;

/// <summary>
/// Turns a request body into the model's input: an image (PNG or JPEG) through the library's
/// <see cref="ImageDecoder"/> (the decoding <c>gati predict</c> uses too), or a JSON pixel array read strictly.
/// </summary>
public static class RequestDecoder
{
    /// <summary>
    /// The model input for a request body of <paramref name="mediaType"/> (image/png, image/jpeg or application/json).
    /// Throws <see cref="InvalidDataException"/> for a body that cannot be decoded and <see cref="ArgumentException"/> for
    /// one that decodes to the wrong input; nothing else.
    /// </summary>
    /// <param name="mediaType">The body's media type, lower case, without parameters.</param>
    /// <param name="body">The body.</param>
    /// <param name="shape">The model's input [C, H, W].</param>
    /// <param name="normalization">The model's input normalisation, or null.</param>
    /// <param name="limits">What images may be decoded; null: <see cref="ImageDecodingLimits.ForInput"/> of <paramref name="shape"/>.</param>
    public static float[] FromBody(string mediaType, ReadOnlySpan<byte> body, TensorShape shape, ChannelNormalization? normalization, ImageDecodingLimits? limits = null) => mediaType switch
    {
        "application/json" => FromPixels(ParsePixels(body), shape, normalization),
        "image/png" or "image/jpeg" => ImageDecoder.Decode(body, shape, normalization, limits),
        _ => throw new ArgumentException($"Unsupported media type '{mediaType}'.", nameof(mediaType)),
    };

    /// <summary>
    /// The "pixels" array of a JSON body, read strictly: one object whose only property is "pixels" (exact case, once),
    /// an array of JSON numbers; no strings, nulls or nested values, no comments or trailing commas. Returns null when
    /// the object has no "pixels"; throws <see cref="InvalidDataException"/> ("The JSON body is not valid: ...") for
    /// anything else, <see cref="ArgumentException"/> for a number no float can hold.
    /// </summary>
    internal static float[]? ParsePixels(ReadOnlySpan<byte> body)
    {
        var reader = new Utf8JsonReader(body, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow, AllowTrailingCommas = false });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw Invalid($"it must be one object, {{\"pixels\": [...]}}, not {Describe(reader.TokenType)}");
            List<float>? pixels = null;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                if (!reader.ValueTextEquals("pixels"u8))
                    throw Invalid($"it has a property \"{Shown(reader.ValueSpan)}\"; the only property is \"pixels\" (names are case-sensitive)");
                if (pixels is not null) throw Invalid("it has \"pixels\" twice");
                reader.Read();
                if (reader.TokenType != JsonTokenType.StartArray) throw Invalid($"\"pixels\" must be an array of numbers, not {Describe(reader.TokenType)}");
                pixels = [];
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    if (reader.TokenType != JsonTokenType.Number)
                        throw Invalid($"\"pixels\"[{pixels.Count}] is {Describe(reader.TokenType)}; pixels are JSON numbers from 0 to 255");
                    if (!reader.TryGetSingle(out var value) || !float.IsFinite(value))
                        throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                            $"\"pixels\"[{pixels.Count}] is {Shown(reader.ValueSpan)}; pixels must be numbers from 0 to 255."));
                    pixels.Add(value);
                }
            }
            // The reader itself refuses anything after the object but whitespace.
            while (reader.Read()) { }
            return pixels?.ToArray();
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"The JSON body is not valid: {ex.Message}", ex);
        }
    }

    /// <summary>Raw JSON text for a message: decoded leniently (the reader has not checked a name's UTF-8) and cut at 40 characters.</summary>
    private static string Shown(ReadOnlySpan<byte> raw)
    {
        var text = System.Text.Encoding.UTF8.GetString(raw);
        return text.Length <= 40 ? text : text[..40] + "...";
    }

    private static InvalidDataException Invalid(string problem) => new($"The JSON body is not valid: {problem}.");

    private static string Describe(JsonTokenType token) => token switch
    {
        JsonTokenType.StartArray => "an array",
        JsonTokenType.StartObject => "an object",
        JsonTokenType.String => "a string",
        JsonTokenType.Number => "a number",
        JsonTokenType.True or JsonTokenType.False => "a boolean",
        JsonTokenType.Null => "null",
        _ => "empty",
    };

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
        if (normalization is null) return values;
        var normalized = new float[values.Length];
        normalization.Normalize(values, normalized);
        return normalized;
    }
}
