namespace Gati.MLNet.ModelFormat;

/// <summary>Small helpers for the binary headers our transformers write into ML.NET model streams.</summary>
internal static class ModelText
{
    public static void WriteStrings(BinaryWriter writer, IReadOnlyList<string> values)
    {
        writer.Write(values.Count);
        foreach (var value in values) writer.Write(value);
    }

    public static string[] ReadStrings(BinaryReader reader, string what, int max = 1_000_000)
    {
        var count = reader.ReadInt32();
        if (count < 0 || count > max) throw new InvalidDataException($"Corrupt model: {what} count {count} is out of range.");
        var values = new string[count];
        for (var i = 0; i < count; i++) values[i] = reader.ReadString();
        return values;
    }

    public static int ReadInt(BinaryReader reader, string what, int min, int max)
    {
        var value = reader.ReadInt32();
        if (value < min || value > max) throw new InvalidDataException($"Corrupt model: {what} is {value}, expected {min}..{max}.");
        return value;
    }

    /// <summary>Writes an optional normalisation: byte 0 (none) or 1, then int32 channels and channels x (mean, std) floats.</summary>
    public static void WriteNormalization(BinaryWriter writer, Data.ChannelNormalization? normalization)
    {
        writer.Write((byte)(normalization is null ? 0 : 1));
        if (normalization is null) return;
        writer.Write(normalization.Channels);
        for (var c = 0; c < normalization.Channels; c++)
        {
            writer.Write(normalization.Mean[c]);
            writer.Write(normalization.Std[c]);
        }
    }

    public static Data.ChannelNormalization? ReadNormalization(BinaryReader reader)
    {
        var present = reader.ReadByte();
        if (present == 0) return null;
        if (present != 1) throw new InvalidDataException($"Corrupt model: normalisation flag {present}.");
        var channels = ReadInt(reader, "normalisation channels", 1, 64);
        var mean = new float[channels];
        var std = new float[channels];
        for (var c = 0; c < channels; c++)
        {
            mean[c] = reader.ReadSingle();
            std[c] = reader.ReadSingle();
        }
        try
        {
            return new Data.ChannelNormalization(mean, std);
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException($"Corrupt model: {ex.Message}", ex);
        }
    }
}
