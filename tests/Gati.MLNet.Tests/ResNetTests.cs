using Gati.MLNet.Data;
using Gati.MLNet.Models;
using Gati.MLNet.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

public class ResNetTests
{
    public ResNetTests() => TorchRuntime.EnsureInitialized();

    [Theory]
    [InlineData(ResNetArchitecture.ResNet18, 8)]
    [InlineData(ResNetArchitecture.ResNet34, 16)]
    [InlineData(ResNetArchitecture.ResNet50, 16)]
    [InlineData(ResNetArchitecture.ResNet101, 33)]
    [InlineData(ResNetArchitecture.ResNet152, 50)]
    public void Forward_EveryDepth_LayerShapesMatchSpecAndBlocksComposeToForward(ResNetArchitecture architecture, int layers)
    {
        var input = new TensorShape(3, 32, 32);
        using var net = new ResNet(new ResNetConfig(architecture, input, 10, BaseWidth: 4));
        net.eval();
        Assert.Equal(layers, net.LayerCount);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = randn(2, 3, 32, 32);
        var all = Enumerable.Range(1, layers).ToArray();
        var (logits, outputs) = net.ForwardWithLayers(x, all);
        Assert.Equal(new long[] { 2, 10 }, logits.shape);
        var h = net.Stem(x);
        for (var layer = 1; layer <= layers; layer++)
        {
            var expected = net.LayerOutputShape(layer);
            Assert.Equal(new long[] { 2, expected.Channels, expected.Height, expected.Width }, outputs[layer - 1].shape);
            h = net.Block(layer, h);
            Assert.True(h.allclose(outputs[layer - 1]));
        }
        Assert.True(net.Head(h).allclose(net.forward(x), rtol: 1e-4, atol: 1e-5));
    }
}

public class ResNetSpecTests
{
    [Theory]
    [InlineData("resnet18", ResNetArchitecture.ResNet18)]
    [InlineData("ResNet-50", ResNetArchitecture.ResNet50)]
    [InlineData("152", ResNetArchitecture.ResNet152)]
    public void Parse_CommonSpellings(string text, ResNetArchitecture expected) => Assert.Equal(expected, ResNetSpec.Parse(text));

    [Theory]
    [InlineData("resnet19")]
    [InlineData("vgg16")]
    public void Parse_Unknown_ListsTheChoices(string text) =>
        Assert.Contains("resnet18, resnet34, resnet50, resnet101 or resnet152", Assert.Throws<ArgumentException>(() => ResNetSpec.Parse(text)).Message);

    [Theory]
    [InlineData(0)]
    [InlineData(9)]
    public void CheckLayer_OutsideResNet18_SaysWhichLayersExist(int layer)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => ResNetSpec.For(ResNetArchitecture.ResNet18).CheckLayer(layer));
        Assert.Contains("layers 1..8", error.Message);
    }

    [Fact]
    public void Locate_ResNet50_MapsLayersToStages()
    {
        var spec = ResNetSpec.For(ResNetArchitecture.ResNet50);
        Assert.Equal((1, 0), spec.Locate(1));
        Assert.Equal((2, 0), spec.Locate(4));
        Assert.Equal((3, 5), spec.Locate(13));
        Assert.Equal((4, 2), spec.Locate(16));
    }

    [Fact]
    public void LayerOutputShape_FashionMnistResNet18Width16()
    {
        var spec = ResNetSpec.For(ResNetArchitecture.ResNet18);
        var input = new TensorShape(1, 28, 28);
        Assert.Equal(new TensorShape(16, 28, 28), spec.LayerOutputShape(2, input, 16));
        Assert.Equal(new TensorShape(32, 14, 14), spec.LayerOutputShape(3, input, 16));
        Assert.Equal(new TensorShape(64, 7, 7), spec.LayerOutputShape(6, input, 16));
        Assert.Equal(new TensorShape(128, 4, 4), spec.LayerOutputShape(8, input, 16));
    }

    [Fact]
    public void Config_OneChannelInputAndTooSmallImages()
    {
        Assert.Throws<ArgumentException>(() => new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 4, 4), 10).Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 28, 28), 1).Validate());
    }

    [Fact]
    public void Block_LayerOutOfRange_Throws()
    {
        TorchRuntime.EnsureInitialized();
        using var net = new ResNet(new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 28, 28), 10, 4));
        using var x = torch.zeros(1, 4, 28, 28);
        Assert.Throws<ArgumentOutOfRangeException>(() => net.Block(9, x));
    }

    [Fact]
    public void StateDict_UsesPyTorchNames()
    {
        TorchRuntime.EnsureInitialized();
        using var net = new ResNet(new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(3, 32, 32), 10, 4));
        var names = net.state_dict().Keys.ToHashSet();
        Assert.Contains("conv1.weight", names);
        Assert.Contains("bn1.running_mean", names);
        Assert.Contains("layer2.0.shortcut.0.weight", names);
        Assert.Contains("layer4.1.conv2.weight", names);
        Assert.Contains("fc.bias", names);
    }
}
