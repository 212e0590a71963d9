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
}
