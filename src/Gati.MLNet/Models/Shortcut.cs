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
}
