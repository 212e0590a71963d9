using System.Globalization;

namespace Gati.MLNet.Data;

/// <summary>
/// Per-channel normalisation applied to pixels scaled to [0, 1]: <c>(pixel - Mean[c]) / Std[c]</c>, as in the
/// reference's <c>transforms.Normalize</c>.
/// </summary>
public sealed class ChannelNormalization
{
    /// <summary>Creates a normalisation with one mean and one standard deviation per channel.</summary>
    public ChannelNormalization(IReadOnlyList<float> mean, IReadOnlyList<float> std)
    {
        ArgumentNullException.ThrowIfNull(mean);
        ArgumentNullException.ThrowIfNull(std);
        if (mean.Count == 0 || mean.Count != std.Count)
            throw new ArgumentException($"Mean and std need one value per channel (got {mean.Count} means and {std.Count} stds).");
        for (var c = 0; c < std.Count; c++)
        {
            if (!float.IsFinite(mean[c]) || !float.IsFinite(std[c]) || std[c] <= 0)
                throw new ArgumentException($"Channel {c}: mean must be finite and std positive (got mean {mean[c]}, std {std[c]}).");
        }
        Mean = mean.ToArray();
        Std = std.ToArray();
    }

    /// <summary>Per-channel means (of pixels in [0, 1]).</summary>
    public IReadOnlyList<float> Mean { get; }

    /// <summary>Per-channel standard deviations.</summary>
    public IReadOnlyList<float> Std { get; }

    /// <summary>Number of channels.</summary>
    public int Channels => Mean.Count;

    /// <summary>Fashion-MNIST training-set statistics.</summary>
    public static ChannelNormalization FashionMnist { get; } = new([0.2860f], [0.3530f]);

    /// <summary>CIFAR-10 statistics used by the reference.</summary>
    public static ChannelNormalization Cifar10 { get; } = new([0.4914f, 0.4822f, 0.4465f], [0.2023f, 0.1994f, 0.2010f]);

    /// <summary>CIFAR-100 statistics used by the reference.</summary>
    public static ChannelNormalization Cifar100 { get; } = new([0.5071f, 0.4867f, 0.4408f], [0.2675f, 0.2565f, 0.2761f]);

    /// <summary>No normalisation: pixels stay in [0, 1].</summary>
    public static ChannelNormalization Identity(int channels) =>
        new(Enumerable.Repeat(0f, channels).ToArray(), Enumerable.Repeat(1f, channels).ToArray());

    /// <summary>Throws unless this normalisation has <paramref name="channels"/> channels.</summary>
    public void CheckChannels(int channels, string what)
    {
        if (Channels != channels)
            throw new ArgumentException($"{what} has {channels} channel(s) but the normalisation gives {Channels} mean/std pair(s).");
    }

    /// <summary>
    /// Normalises planar pixels ([C, H, W], scaled to [0, 1]) into <paramref name="destination"/>: what the dataset
    /// loaders do, for serving code that receives raw images.
    /// </summary>
    public void Normalize(ReadOnlySpan<float> pixels, Span<float> destination)
    {
        if (pixels.Length != destination.Length || pixels.Length % Channels != 0)
            throw new ArgumentException($"{pixels.Length} pixels cannot be split into {Channels} planes (destination {destination.Length}).");
        var plane = pixels.Length / Channels;
        for (var c = 0; c < Channels; c++)
        {
            var mean = Mean[c];
            var scale = 1f / Std[c];
            for (var i = c * plane; i < (c + 1) * plane; i++) destination[i] = (pixels[i] - mean) * scale;
        }
    }

    /// <summary>A 256-entry table per channel mapping a byte pixel to its normalised value.</summary>
    internal float[][] ByteLookup()
    {
        var tables = new float[Channels][];
        for (var c = 0; c < Channels; c++)
        {
            tables[c] = new float[256];
            for (var v = 0; v < 256; v++) tables[c][v] = (v / 255f - Mean[c]) / Std[c];
        }
        return tables;
    }

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"mean ({string.Join(", ", Mean)}) std ({string.Join(", ", Std)})");
}
