using Gati.MLNet.Data;
namespace Gati.MLNet.Models;

/// <summary>Everything needed to rebuild a <see cref="ResNet"/> before loading its weights.</summary>
/// <param name="Architecture">Depth and block type.</param>
/// <param name="InputShape">[C, H, W] of the input images (1 or 3 channels).</param>
/// <param name="ClassCount">Number of output classes (at least 2).</param>
/// <param name="BaseWidth">Channels of the stem and the first stage: 64 is the paper's; 8-16 suit CPUs.</param>
public sealed record ResNetConfig(ResNetArchitecture Architecture, TensorShape InputShape, int ClassCount, int BaseWidth = 64)
{
    /// <summary>Throws a clear error for an impossible configuration.</summary>
    public void Validate()
    {
        InputShape.Validate("Input image");
        if (!Enum.IsDefined(Architecture))
            throw new ArgumentOutOfRangeException(nameof(Architecture), Architecture, "Unknown ResNet architecture.");
        if (ClassCount < 2)
            throw new ArgumentOutOfRangeException(nameof(ClassCount), ClassCount, "A classifier needs at least 2 classes.");
        if (BaseWidth < 1 || BaseWidth > 1024)
            throw new ArgumentOutOfRangeException(nameof(BaseWidth), BaseWidth, "Base width must be between 1 and 1024 channels.");
        if (InputShape.Height < 8 || InputShape.Width < 8)
            throw new ArgumentException($"Input images must be at least 8x8 for a four-stage ResNet (got {InputShape}).", nameof(InputShape));
    }
}
