using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gati.MLNet.Models;

/// <summary>The residual shortcut: identity, or 1x1 convolution + BatchNorm when stride or width changes.</summary>
internal static class Shortcut
{
    public static Sequential Create(long inChannels, long outChannels, long stride)
    {
        if (stride == 1 && inChannels == outChannels)
            return nn.Sequential();
        return nn.Sequential(
            ("0", nn.Conv2d(inChannels, outChannels, kernel_size: 1, stride: stride, bias: false)),
            ("1", nn.BatchNorm2d(outChannels)));
    }

    /// <summary>The projection's convolution and batch norm (null for the identity), read once when the block is built.</summary>
    public sealed record Projection(Conv2d Conv, BatchNorm2d Norm);

    /// <summary>The projection of a shortcut made by <see cref="Create"/>, or null for the identity.</summary>
    public static Projection? Parts(Sequential shortcut)
    {
        var parts = shortcut.children().ToArray();
        return parts.Length == 0 ? null : new Projection((Conv2d)parts[0], (BatchNorm2d)parts[1]);
    }

    /// <summary>The shortcut's forward, its batch norm through <see cref="Torch.Scalars.Normalize"/>.</summary>
    public static Tensor Forward(Projection? projection, Tensor input) =>
        projection is null ? input : Torch.Scalars.Normalize(projection.Norm, projection.Conv.forward(input));
}
