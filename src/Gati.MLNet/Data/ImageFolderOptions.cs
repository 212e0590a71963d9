namespace Gati.MLNet.Data;

/// <summary>Settings for reading a folder of images (one sub-folder per class).</summary>
public sealed class ImageFolderOptions
{
    /// <summary>Width images are resized to.</summary>
    public int Width { get; set; } = 32;

    /// <summary>Height images are resized to.</summary>
    public int Height { get; set; } = 32;

    /// <summary>Convert to one grayscale channel (else three RGB channels).</summary>
    public bool Grayscale { get; set; }

    /// <summary>Per-channel normalisation of pixels in [0, 1]; null leaves them in [0, 1].</summary>
    public ChannelNormalization? Normalization { get; set; }

    /// <summary>File extensions read as images (case-insensitive).</summary>
    public IReadOnlyList<string> Extensions { get; set; } = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];

    /// <summary>
    /// Largest image read, in pixels (width x height from the file's header, checked before decoding). Decoding
    /// takes 4 bytes per pixel, so a small file whose header claims a huge size is refused instead of allocated.
    /// </summary>
    public long MaxImagePixels { get; set; } = 40_000_000;

    /// <summary>The [C, H, W] the images become.</summary>
    public TensorShape Shape => new(Grayscale ? 1 : 3, Height, Width);

    internal void Validate()
    {
        if (Width < 1 || Height < 1) throw new ArgumentOutOfRangeException(nameof(Width), $"Image size must be positive (got {Width}x{Height}).");
        if (MaxImagePixels < 1) throw new ArgumentOutOfRangeException(nameof(MaxImagePixels), MaxImagePixels, "Must be positive.");
        Normalization?.CheckChannels(Shape.Channels, Grayscale ? "A grayscale image" : "An RGB image");
    }
}
