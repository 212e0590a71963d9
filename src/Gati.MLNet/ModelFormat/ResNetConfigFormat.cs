using Gati.MLNet.Data;
using Gati.MLNet.Models;

namespace Gati.MLNet.ModelFormat;

/// <summary>
/// The base network's configuration as every component that holds it writes it: byte architecture, then int32
/// channels, height, width, class count and base width (docs/model-format.md).
/// </summary>
internal static class ResNetConfigFormat
{
    public static void Write(BinaryWriter writer, ResNetConfig config)
    {
        writer.Write((byte)config.Architecture);
        writer.Write(config.InputShape.Channels);
        writer.Write(config.InputShape.Height);
        writer.Write(config.InputShape.Width);
        writer.Write(config.ClassCount);
        writer.Write(config.BaseWidth);
    }

    /// <summary>
    /// The number of parameters (BatchNorm buffers aside) of the network <paramref name="config"/> describes, counted
    /// without building it: a loader compares it with the stored weights first, so that a corrupt width or depth cannot
    /// make it build a network of billions of parameters. Mirrors <see cref="ResNet"/>, BasicBlock, Bottleneck and Shortcut.
    /// </summary>
    public static long ParameterCount(ResNetConfig config)
    {
        var spec = ResNetSpec.For(config.Architecture);
        long width = config.BaseWidth;
        static long Conv(long inChannels, long outChannels, long kernel) => inChannels * outChannels * kernel * kernel;
        static long BatchNorm(long channels) => 2 * channels;
        var total = Conv(config.InputShape.Channels, width, 3) + BatchNorm(width);
        var inPlanes = width;
        for (var stage = 0; stage < spec.BlocksPerStage.Count; stage++)
        {
            var planes = width << stage;
            var outPlanes = planes * spec.Expansion;
            for (var block = 0; block < spec.BlocksPerStage[stage]; block++)
            {
                var stride = block == 0 && stage > 0 ? 2 : 1;
                total += spec.Bottleneck
                    ? Conv(inPlanes, planes, 1) + BatchNorm(planes) + Conv(planes, planes, 3) + BatchNorm(planes) + Conv(planes, outPlanes, 1) + BatchNorm(outPlanes)
                    : Conv(inPlanes, planes, 3) + BatchNorm(planes) + Conv(planes, planes, 3) + BatchNorm(planes);
                if (stride != 1 || inPlanes != outPlanes) total += Conv(inPlanes, outPlanes, 1) + BatchNorm(outPlanes);
                inPlanes = outPlanes;
            }
        }
        return total + inPlanes * config.ClassCount + config.ClassCount;
    }

    public static ResNetConfig Read(BinaryReader reader)
    {
        var architecture = (ResNetArchitecture)reader.ReadByte();
        if (!Enum.IsDefined(architecture)) throw new InvalidDataException($"Corrupt model: unknown architecture code {(int)architecture}.");
        var channels = ModelText.ReadInt(reader, "channels", 1, 64);
        var height = ModelText.ReadInt(reader, "height", 1, 1 << 16);
        var width = ModelText.ReadInt(reader, "width", 1, 1 << 16);
        var classes = ModelText.ReadInt(reader, "class count", 2, 100_000);
        var baseWidth = ModelText.ReadInt(reader, "base width", 1, 1024);
        var config = new ResNetConfig(architecture, new TensorShape(channels, height, width), classes, baseWidth);
        try
        {
            config.Validate();
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
        }
        return config;
    }

    /// <summary>
    /// A configuration followed by its class names (ModelText strings), as a ResNet model stream, and the 1.1-1.2 streams
    /// of the components that embedded the network, write them; checks that the names are one per class.
    /// </summary>
    public static (ResNetConfig Config, string[] ClassNames) ReadWithClassNames(BinaryReader reader)
    {
        var config = Read(reader);
        var classNames = ModelText.ReadStrings(reader, "class name", 100_000);
        if (classNames.Length != config.ClassCount) throw new InvalidDataException($"Corrupt model: {classNames.Length} class names for {config.ClassCount} classes.");
        return (config, classNames);
    }
}
