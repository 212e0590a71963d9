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
}
