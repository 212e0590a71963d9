namespace Gati.MLNet.Data;

/// <summary>A [channels, height, width] image or feature-map shape.</summary>
/// <param name="Channels">Number of channels.</param>
/// <param name="Height">Height in pixels.</param>
/// <param name="Width">Width in pixels.</param>
public readonly record struct TensorShape(int Channels, int Height, int Width)
{
    /// <summary>Channels * Height * Width: the length of the flattened vector.</summary>
    public int Size => checked(Channels * Height * Width);

    /// <summary>The shape as a TorchSharp size for a batch of <paramref name="batch"/>.</summary>
    public long[] WithBatch(long batch) => [batch, Channels, Height, Width];

    /// <summary>Throws unless every dimension is positive.</summary>
    public void Validate(string what)
    {
        if (Channels <= 0 || Height <= 0 || Width <= 0)
            throw new ArgumentException($"{what} shape must be positive in every dimension (got {this}).");
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Channels}x{Height}x{Width}";
}
