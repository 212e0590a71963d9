using Gati.MLNet.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gati.MLNet.Models;

/// <summary>1x1 reduce, 3x3, 1x1 expand (x4) with a residual shortcut (ResNet-50/101/152).</summary>
internal sealed class Bottleneck : nn.Module<Tensor, Tensor>
{
    public const int Expansion = 4;

    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Conv2d conv3;
    private readonly BatchNorm2d bn3;
    private readonly Sequential shortcut;
    private readonly Shortcut.Projection? projection; // not a module: the same networks as `shortcut`, read once

    public Bottleneck(string name, long inPlanes, long planes, long stride) : base(name)
    {
        conv1 = nn.Conv2d(inPlanes, planes, kernel_size: 1, bias: false);
        bn1 = nn.BatchNorm2d(planes);
        conv2 = nn.Conv2d(planes, planes, kernel_size: 3, stride: stride, padding: 1, bias: false);
        bn2 = nn.BatchNorm2d(planes);
        conv3 = nn.Conv2d(planes, planes * Expansion, kernel_size: 1, bias: false);
        bn3 = nn.BatchNorm2d(planes * Expansion);
        shortcut = Shortcut.Create(inPlanes, planes * Expansion, stride);
        projection = Shortcut.Parts(shortcut);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        var x = nn.functional.relu(bn1.Normalize(conv1.forward(input)));
        x = nn.functional.relu(bn2.Normalize(conv2.forward(x)));
        x = bn3.Normalize(conv3.forward(x));
        x = x.PlusInPlace(Shortcut.Forward(projection, input));
        return x.relu_();
    }
}
