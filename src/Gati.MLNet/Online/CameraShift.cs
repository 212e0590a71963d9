namespace Gati.MLNet.Online;

/// <summary>
/// A changed camera, for drift workloads (docs/online.md#benchmark): the same scenes photographed with lower contrast
/// and sensor noise, as when a shop's product photos start coming from a cheaper camera or a dimmer light box. Each
/// pixel becomes <c>clamp(m + Contrast·(x − m) + Noise·range·z, 0, range)</c>, where m is the image's mean, z is standard
/// normal noise drawn per pixel from a seed, and range is the pixel scale (255 for ML.NET's ExtractPixels without
/// scaling, 1 for scaled pixels). Images normalised per channel (as Gati's dataset readers give them) are shifted in
/// pixel space and normalised back.
/// </summary>
public sealed record CameraShift
{
    /// <param name="contrast">Contrast kept, in (0, 1]: 0.5 halves every pixel's distance from the image's mean.</param>
    /// <param name="noise">Standard deviation of the sensor noise as a share of the pixel range (0.05: 12.75 of 255).</param>
    /// <param name="range">The pixel scale: values lie in [0, range].</param>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of its range.</exception>
    public CameraShift(double contrast, double noise, float range)
    {
        Contrast = contrast is > 0 and <= 1 ? contrast : throw new ArgumentOutOfRangeException(nameof(contrast), contrast, "Must be in (0, 1].");
        Noise = noise is >= 0 and < 1 ? noise : throw new ArgumentOutOfRangeException(nameof(noise), noise, "Must be in [0, 1).");
        Range = range > 0 && float.IsFinite(range) ? range : throw new ArgumentOutOfRangeException(nameof(range), range, "Must be positive and finite.");
    }

    /// <summary>Contrast kept, in (0, 1].</summary>
    public double Contrast { get; }

    /// <summary>Standard deviation of the sensor noise as a share of the pixel range.</summary>
    public double Noise { get; }

    /// <summary>The pixel scale: values lie in [0, Range].</summary>
    public float Range { get; }

    /// <summary>Shifts one image (C×H×W); the same <paramref name="seed"/> gives the same noise.</summary>
    /// <param name="image">The image.</param>
    /// <param name="shifted">Receives the shifted image.</param>
    /// <param name="seed">Seed of the noise.</param>
    /// <param name="normalization">
    /// The per-channel normalisation the image carries, if any: pixels are <c>x·Std[c] + Mean[c]</c>, in [0, 1] (then
    /// <see cref="Range"/> should be 1).
    /// </param>
    /// <exception cref="ArgumentException">The spans differ in length, or the image does not split into the normalisation's channels.</exception>
    /// <exception cref="InvalidDataException">The image holds a NaN or infinite value.</exception>
    public void Apply(ReadOnlySpan<float> image, Span<float> shifted, int seed, Data.ChannelNormalization? normalization = null)
    {
        if (image.Length != shifted.Length) throw new ArgumentException($"The output has {shifted.Length} values, the image {image.Length}.", nameof(shifted));
        var channels = normalization?.Channels ?? 1;
        if (image.Length % channels != 0)
            throw new ArgumentException($"The image's {image.Length} values do not split into {channels} channels.", nameof(image));
        var plane = image.Length / channels;
        double sum = 0;
        for (var i = 0; i < image.Length; i++)
        {
            if (!float.IsFinite(image[i])) throw new InvalidDataException($"The image holds a NaN or infinite value at {i}: it cannot be shifted.");
            sum += Pixel(image[i], normalization, i / plane);
        }
        var mean = image.Length == 0 ? 0 : sum / image.Length;
        var random = new Random(seed);
        var sigma = Noise * Range;
        for (var i = 0; i < image.Length; i++)
        {
            var value = Math.Clamp(mean + Contrast * (Pixel(image[i], normalization, i / plane) - mean) + sigma * StandardNormal(random), 0, Range);
            shifted[i] = (float)(normalization is null ? value : (value - normalization.Mean[i / plane]) / normalization.Std[i / plane]);
        }
    }

    /// <summary>
    /// The pixel scale of images read as floats: 255 when any value exceeds 1 (ML.NET's ExtractPixels without scaling),
    /// else 1.
    /// </summary>
    public static float RangeOf(ReadOnlySpan<float> images)
    {
        foreach (var x in images) if (x > 1) return 255;
        return 1;
    }

    private static double Pixel(float x, Data.ChannelNormalization? normalization, int channel) =>
        normalization is null ? x : x * normalization.Std[channel] + normalization.Mean[channel];

    private static double StandardNormal(Random random)
    {
        // Box-Muller: 1 - NextDouble() lies in (0, 1], so the logarithm is finite.
        var u = 1 - random.NextDouble();
        var v = random.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * v);
    }
}
