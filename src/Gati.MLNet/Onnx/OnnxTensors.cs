using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;

namespace Gati.MLNet.Onnx;

/// <summary>
/// Reads and writes the data of ONNX tensors (initializers and constants), checking that the data present matches the
/// declared dimensions before anything is allocated from them.
/// </summary>
internal static class OnnxTensors
{
    /// <summary>Largest tensor accepted, in elements (a corrupt dimension must not make us allocate gigabytes).</summary>
    public const long MaxElements = 1L << 30;

    public static TensorProto Float(string name, ReadOnlySpan<float> values, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = OnnxGraph.FloatBytes(values) };
        tensor.Dims.AddRange(dims);
        if (ElementCount(tensor, name) != values.Length) throw new ArgumentException($"Tensor '{name}': {values.Length} values for [{string.Join(", ", dims)}].");
        return tensor;
    }

    public static TensorProto Int64(string name, ReadOnlySpan<long> values, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.AddRange(dims);
        foreach (var v in values) tensor.Int64Data.Add(v);
        return tensor;
    }

    /// <summary>The number of elements the dimensions declare; an error for negative or absurd dimensions.</summary>
    public static long ElementCount(TensorProto tensor, string what)
    {
        long count = 1;
        foreach (var d in tensor.Dims)
        {
            if (d < 0) throw new InvalidDataException($"{what}: tensor '{tensor.Name}' has a negative dimension ({d}).");
            if (d > 0 && count > MaxElements / d)
                throw new InvalidDataException($"{what}: tensor '{tensor.Name}' declares [{string.Join(", ", tensor.Dims)}], more than {MaxElements} elements.");
            count *= d;
        }
        return count;
    }

    /// <summary>The element type as the enum.</summary>
    public static TensorProto.Types.DataType Type(TensorProto tensor) => (TensorProto.Types.DataType)tensor.DataType;

    /// <summary>Checks that a tensor's stored data has exactly the declared number of elements of its type.</summary>
    public static void Validate(TensorProto tensor, string what)
    {
        var count = ElementCount(tensor, what);
        if (tensor.DataLocation == TensorProto.Types.DataLocation.External)
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' keeps its data in an external file that was not resolved.");
        var type = Type(tensor);
        long present = type switch
        {
            _ when tensor.RawData.Length > 0 => ElementSize(type, tensor, what) is var size && tensor.RawData.Length % size == 0
                ? tensor.RawData.Length / size
                : throw new InvalidDataException($"{what}: tensor '{tensor.Name}' holds {tensor.RawData.Length} bytes, not a whole number of {type} values."),
            TensorProto.Types.DataType.Float => tensor.FloatData.Count,
            TensorProto.Types.DataType.Double => tensor.DoubleData.Count,
            TensorProto.Types.DataType.Int64 => tensor.Int64Data.Count,
            TensorProto.Types.DataType.Int32 or TensorProto.Types.DataType.Bool or TensorProto.Types.DataType.Float16
                or TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Uint8 or TensorProto.Types.DataType.Int16 => tensor.Int32Data.Count,
            _ => throw new InvalidDataException($"{what}: tensor '{tensor.Name}' has element type {type}, which Gati does not import."),
        };
        if (present != count)
            throw new InvalidDataException($"{what}: tensor '{tensor.Name}' declares [{string.Join(", ", tensor.Dims)}] ({count} values) but holds {present}.");
    }

    private static int ElementSize(TensorProto.Types.DataType type, TensorProto tensor, string what) => type switch
    {
        TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Int32 => 4,
        TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Int64 => 8,
        TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Int16 => 2,
        TensorProto.Types.DataType.Bool or TensorProto.Types.DataType.Int8 or TensorProto.Types.DataType.Uint8 => 1,
        _ => throw new InvalidDataException($"{what}: tensor '{tensor.Name}' has element type {type}, which Gati does not import."),
    };

    /// <summary>The values of a float tensor (float32, or float16/double widened/narrowed to float32).</summary>
    public static float[] Floats(TensorProto tensor, string what)
    {
        Validate(tensor, what);
        var count = (int)ElementCount(tensor, what);
        var type = Type(tensor);
        var values = new float[count];
        switch (type)
        {
            case TensorProto.Types.DataType.Float when tensor.RawData.Length > 0:
                MemoryMarshal.Cast<byte, float>(tensor.RawData.Span).CopyTo(values);
                if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("ONNX raw data is little-endian.");
                break;
            case TensorProto.Types.DataType.Float:
                tensor.FloatData.CopyTo(values, 0);
                break;
            case TensorProto.Types.DataType.Double when tensor.RawData.Length > 0:
                for (var i = 0; i < count; i++) values[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(tensor.RawData.Span[(i * 8)..]);
                break;
            case TensorProto.Types.DataType.Double:
                for (var i = 0; i < count; i++) values[i] = (float)tensor.DoubleData[i];
                break;
            case TensorProto.Types.DataType.Float16 when tensor.RawData.Length > 0:
                for (var i = 0; i < count; i++) values[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(tensor.RawData.Span[(i * 2)..]);
                break;
            case TensorProto.Types.DataType.Float16:
                for (var i = 0; i < count; i++) values[i] = (float)BitConverter.UInt16BitsToHalf((ushort)tensor.Int32Data[i]);
                break;
            default:
                throw new InvalidDataException($"{what}: tensor '{tensor.Name}' holds {type} values where floating-point weights are expected.");
        }
        return values;
    }

    /// <summary>The values of an integer tensor (int64 or int32) as longs.</summary>
    public static long[] Int64s(TensorProto tensor, string what)
    {
        Validate(tensor, what);
        var count = (int)ElementCount(tensor, what);
        var values = new long[count];
        switch (Type(tensor))
        {
            case TensorProto.Types.DataType.Int64 when tensor.RawData.Length > 0:
                for (var i = 0; i < count; i++) values[i] = BinaryPrimitives.ReadInt64LittleEndian(tensor.RawData.Span[(i * 8)..]);
                break;
            case TensorProto.Types.DataType.Int64:
                tensor.Int64Data.CopyTo(values, 0);
                break;
            case TensorProto.Types.DataType.Int32 when tensor.RawData.Length > 0:
                for (var i = 0; i < count; i++) values[i] = BinaryPrimitives.ReadInt32LittleEndian(tensor.RawData.Span[(i * 4)..]);
                break;
            case TensorProto.Types.DataType.Int32:
                for (var i = 0; i < count; i++) values[i] = tensor.Int32Data[i];
                break;
            default:
                throw new InvalidDataException($"{what}: tensor '{tensor.Name}' holds {Type(tensor)} values where integers are expected.");
        }
        return values;
    }

    /// <summary>A float32 copy of a floating-point tensor in raw form (so every weight the importer writes has one representation).</summary>
    public static TensorProto AsFloat32(TensorProto tensor, string what)
    {
        if (Type(tensor) == TensorProto.Types.DataType.Float && tensor.RawData.Length > 0) return tensor;
        return Float(tensor.Name, Floats(tensor, what), tensor.Dims.ToArray());
    }

    public static bool IsFloatingPoint(TensorProto tensor) =>
        Type(tensor) is TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Double or TensorProto.Types.DataType.Float16;

    /// <summary>Raw bytes of a tensor copied from another with a new name (data shared: ByteStrings are immutable).</summary>
    public static TensorProto Renamed(TensorProto tensor, string name)
    {
        var copy = tensor.Clone();
        copy.Name = name;
        return copy;
    }

    public static ByteString Empty => ByteString.Empty;
}
