using TorchSharp;
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

    /// <summary>The shortcut's forward, its batch norm through <see cref="Torch.Scalars.Normalize"/>.</summary>
    public static Tensor Forward(Sequential shortcut, Tensor input)
    {
        var parts = shortcut.children().ToArray();
        if (parts.Length == 0) return shortcut.forward(input);
        return Torch.Scalars.Normalize((BatchNorm2d)parts[1], ((Conv2d)parts[0]).forward(input));
    }
}
