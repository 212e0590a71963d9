using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// Holds the values of one source column for the rows of a batch, so that a batched view can read its source
/// once and serve the source's own columns after the rows it has already read ahead.
/// </summary>
internal abstract class RowBuffer
{
    /// <summary>Reads the current row of the bound cursor into slot <paramref name="slot"/>.</summary>
    public abstract void Read(int slot);

    /// <summary>A getter serving the value stored in slot <c>slot()</c>.</summary>
    public abstract Delegate MakeGetter(Func<int> slot);

    /// <summary>The value type the column's getter uses.</summary>
    public abstract Type ValueType { get; }

    public static RowBuffer Create(DataViewRowCursor cursor, DataViewSchema.Column column, int capacity)
    {
        var raw = column.Type.RawType;
        Type type;
        if (raw.IsGenericType && raw.GetGenericTypeDefinition() == typeof(VBuffer<>))
            type = typeof(VectorBuffer<>).MakeGenericType(raw.GetGenericArguments()[0]);
        else if (raw == typeof(ReadOnlyMemory<char>))
            type = typeof(TextBuffer);
        else
            type = typeof(ValueBuffer<>).MakeGenericType(raw);
        return (RowBuffer)Activator.CreateInstance(type, cursor, column, capacity)!;
    }

    /// <summary>Plain values (numbers, keys, booleans, ids, and reference-typed values handed over as they are).</summary>
    private sealed class ValueBuffer<T>(DataViewRowCursor cursor, DataViewSchema.Column column, int capacity) : RowBuffer
    {
        private readonly ValueGetter<T> _getter = cursor.GetGetter<T>(column);
        private readonly T[] _values = new T[capacity];

        public override Type ValueType => typeof(T);

        public override void Read(int slot)
        {
            T value = default!;
            _getter(ref value);
            _values[slot] = value;
        }

        public override Delegate MakeGetter(Func<int> slot) => (ValueGetter<T>)((ref T value) => value = _values[slot()]);
    }

    /// <summary>Vectors: deep-copied, since sources reuse their buffers from row to row.</summary>
    private sealed class VectorBuffer<T>(DataViewRowCursor cursor, DataViewSchema.Column column, int capacity) : RowBuffer
    {
        private readonly ValueGetter<VBuffer<T>> _getter = cursor.GetGetter<VBuffer<T>>(column);
        private readonly VBuffer<T>[] _values = new VBuffer<T>[capacity];
        private VBuffer<T> _scratch;

        public override Type ValueType => typeof(VBuffer<T>);

        public override void Read(int slot)
        {
            _getter(ref _scratch);
            _scratch.CopyTo(ref _values[slot]);
        }

        public override Delegate MakeGetter(Func<int> slot) => (ValueGetter<VBuffer<T>>)((ref VBuffer<T> value) => _values[slot()].CopyTo(ref value));
    }

    /// <summary>Text: copied, since sources may reuse the memory behind it.</summary>
    private sealed class TextBuffer(DataViewRowCursor cursor, DataViewSchema.Column column, int capacity) : RowBuffer
    {
        private readonly ValueGetter<ReadOnlyMemory<char>> _getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
        private readonly ReadOnlyMemory<char>[] _values = new ReadOnlyMemory<char>[capacity];

        public override Type ValueType => typeof(ReadOnlyMemory<char>);

        public override void Read(int slot)
        {
            ReadOnlyMemory<char> value = default;
            _getter(ref value);
            _values[slot] = value.ToArray();
        }

        public override Delegate MakeGetter(Func<int> slot) =>
            (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> value) => value = _values[slot()]);
    }
}
