using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>The value kinds a batch mapper can produce.</summary>
internal enum OutputKind
{
    /// <summary>Vector&lt;Single&gt; of known size.</summary>
    Vector,

    /// <summary>Key&lt;UInt32&gt; (1-based; 0 = missing).</summary>
    Key,

    /// <summary>Single.</summary>
    Single,

    /// <summary>Boolean.</summary>
    Boolean,

    /// <summary>Int32.</summary>
    Int32,
}

/// <summary>An output column of a <see cref="BatchMapper"/>: name, ML.NET type and annotations.</summary>
internal sealed class OutputColumn
{
    private OutputColumn(string name, OutputKind kind, DataViewType type, int size, DataViewSchema.Annotations? annotations)
    {
        Name = name;
        Kind = kind;
        Type = type;
        Size = size;
        Annotations = annotations ?? DataViewSchema.Annotations.Empty;
    }

    public string Name { get; }

    public OutputKind Kind { get; }

    public DataViewType Type { get; }

    /// <summary>Values per row (vector length, or 1).</summary>
    public int Size { get; }

    public DataViewSchema.Annotations Annotations { get; }

    public static OutputColumn Vector(string name, int size, DataViewSchema.Annotations? annotations = null, int[]? dimensions = null)
    {
        if (dimensions is not null && dimensions.Aggregate(1, (a, b) => a * b) != size)
            throw new ArgumentException($"Dimensions {string.Join("x", dimensions)} do not multiply to {size}.", nameof(dimensions));
        var type = dimensions is null
            ? new VectorDataViewType(NumberDataViewType.Single, size)
            : new VectorDataViewType(NumberDataViewType.Single, dimensions);
        return new(name, OutputKind.Vector, type, size, annotations);
    }

    public static OutputColumn Key(string name, int count, DataViewSchema.Annotations? annotations = null) =>
        new(name, OutputKind.Key, new KeyDataViewType(typeof(uint), count), 1, annotations);

    public static OutputColumn Single(string name) => new(name, OutputKind.Single, NumberDataViewType.Single, 1, null);

    public static OutputColumn Boolean(string name) => new(name, OutputKind.Boolean, BooleanDataViewType.Instance, 1, null);

    public static OutputColumn Int32(string name) => new(name, OutputKind.Int32, NumberDataViewType.Int32, 1, null);

    /// <summary>Storage for <paramref name="rows"/> rows of this column.</summary>
    public Array Allocate(int rows) => Kind switch
    {
        OutputKind.Vector => new float[checked(rows * Size)],
        OutputKind.Key => new uint[rows],
        OutputKind.Single => new float[rows],
        OutputKind.Boolean => new bool[rows],
        OutputKind.Int32 => new int[rows],
        _ => throw new InvalidOperationException(),
    };

    /// <summary>A getter reading row <c>slot()</c> of <c>storage()</c>.</summary>
    public Delegate MakeGetter(Func<Array> storage, Func<int> slot)
    {
        switch (Kind)
        {
            case OutputKind.Vector:
                var size = Size;
                return (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) =>
                {
                    var source = new ReadOnlySpan<float>((float[])storage(), slot() * size, size);
                    var editor = VBufferEditor.Create(ref value, size);
                    source.CopyTo(editor.Values);
                    value = editor.Commit();
                });
            case OutputKind.Key:
                return (ValueGetter<uint>)((ref uint value) => value = ((uint[])storage())[slot()]);
            case OutputKind.Single:
                return (ValueGetter<float>)((ref float value) => value = ((float[])storage())[slot()]);
            case OutputKind.Boolean:
                return (ValueGetter<bool>)((ref bool value) => value = ((bool[])storage())[slot()]);
            case OutputKind.Int32:
                return (ValueGetter<int>)((ref int value) => value = ((int[])storage())[slot()]);
            default:
                throw new InvalidOperationException();
        }
    }

    /// <summary>The C# value type of this column's getter.</summary>
    public Type ValueType => Kind switch
    {
        OutputKind.Vector => typeof(VBuffer<float>),
        OutputKind.Key => typeof(uint),
        OutputKind.Single => typeof(float),
        OutputKind.Boolean => typeof(bool),
        OutputKind.Int32 => typeof(int),
        _ => throw new InvalidOperationException(),
    };
}
