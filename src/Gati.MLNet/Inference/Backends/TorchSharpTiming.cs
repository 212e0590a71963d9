using System.Diagnostics;
using Gati.MLNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Inference.Backends;

/// <summary>TorchSharp timings of a Gati ResNet's parts and of caches on it, on the device the network was loaded on.</summary>
internal sealed class TorchSharpTiming(ResNetBaseModel model) : SegmentTiming
{
    public override string Device => model.Network.Device.ToString();

    /// <summary>The stem counts with block 1, as the engine's first segment runs them.</summary>
    public override double[] Parts(int batch, int runs)
    {
        var shared = model.Network;
        using (shared.Use())
        {
            var network = shared.Module;
            var device = shared.Device;
            var shape = model.InputShape;
            var parts = new double[network.LayerCount + 1];
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var x = torch.randn(shape.WithBatch(batch), device: device);
            var inputs = new Tensor[network.LayerCount + 1];
            inputs[0] = x;
            var stem = network.Stem(x);
            for (var layer = 1; layer <= network.LayerCount; layer++) inputs[layer] = network.Block(layer, layer == 1 ? stem : inputs[layer - 1]);
            parts[0] = Median(runs, device, () => network.Block(1, network.Stem(x)));
            for (var layer = 2; layer <= network.LayerCount; layer++)
            {
                var input = inputs[layer - 1];
                parts[layer - 1] = Median(runs, device, () => network.Block(layer, input));
            }
            var last = inputs[network.LayerCount];
            parts[network.LayerCount] = Median(runs, device, () => nn.functional.softmax(network.Head(last), 1).cpu());
            return parts;
        }
    }

    public override double Cache(LearnedCache cache, int batch, int runs)
    {
        var device = model.Network.Device;
        using (cache.Predictor.Use())
        using (cache.Selector.Use())
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var x = torch.randn(batch, cache.InputSize, device: device);
            // The decision needs the flags on the host: include that sync, as the engine does.
            return Median(runs, device, () => cache.Lookup(x).Hits.cpu());
        }
    }

    private static double Median(int runs, torch.Device device, Func<Tensor> work)
    {
        for (var i = 0; i < 3; i++)
        {
            using var warm = NewDisposeScope();
            work();
        }
        var times = new double[runs];
        for (var i = 0; i < runs; i++)
        {
            using var scope = NewDisposeScope();
            var start = Stopwatch.GetTimestamp();
            work();
            if (device.type == DeviceType.CUDA) torch.cuda.synchronize(device);
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(times);
        return times[runs / 2];
    }
}
