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
