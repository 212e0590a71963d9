using Gati.MLNet.Torch;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gati.MLNet.Models;

/// <summary>Two 3x3 convolutions with a residual shortcut (ResNet-18/34).</summary>
internal sealed class BasicBlock : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Sequential shortcut;
    private readonly Shortcut.Projection? projection; // not a module: the same networks as `shortcut`, read once

    public BasicBlock(string name, long inPlanes, long planes, long stride) : base(name)
    {
        conv1 = nn.Conv2d(inPlanes, planes, kernel_size: 3, stride: stride, padding: 1, bias: false);
        bn1 = nn.BatchNorm2d(planes);
        conv2 = nn.Conv2d(planes, planes, kernel_size: 3, stride: 1, padding: 1, bias: false);
        bn2 = nn.BatchNorm2d(planes);
        shortcut = Shortcut.Create(inPlanes, planes, stride);
        projection = Shortcut.Parts(shortcut);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        var x = nn.functional.relu(bn1.Normalize(conv1.forward(input)));
        x = bn2.Normalize(conv2.forward(x));
        x = x.PlusInPlace(Shortcut.Forward(projection, input));
        return x.relu_();
    }
}
