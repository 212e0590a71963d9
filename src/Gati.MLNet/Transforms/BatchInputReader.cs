using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>Copies a mapper's input vectors from a row into batch buffers, rejecting NaN and infinities.</summary>
internal sealed class BatchInputReader
{
    private readonly BatchMapper _mapper;
    private readonly ValueGetter<VBuffer<float>>[] _getters;
    private readonly DataViewRow _row;
    private VBuffer<float> _value;

    public BatchInputReader(BatchMapper mapper, DataViewRow row, int capacity)
    {
        _mapper = mapper;
        _row = row;
        _getters = mapper.InputColumns.Select(c => row.GetGetter<VBuffer<float>>(row.Schema[c.Index])).ToArray();
        Buffers = mapper.InputSizes.Select(size => new float[checked(capacity * size)]).ToArray();
    }

    /// <summary>One buffer per input column, capacity x size floats.</summary>
    public float[][] Buffers { get; }

    /// <summary>Reads the current row of the bound cursor into slot <paramref name="slot"/>.</summary>
    public void ReadInto(int slot)
    {
        for (var i = 0; i < _getters.Length; i++)
        {
            _getters[i](ref _value);
            var size = _mapper.InputSizes[i];
            var target = Buffers[i].AsSpan(slot * size, size);
            if (_value.Length != size)
                throw new InvalidDataException($"Row {_row.Position}: column '{_mapper.InputColumns[i].Name}' has {_value.Length} values, expected {size}.");
            _value.CopyTo(target);
            var bad = IndexOfNonFinite(target);
            if (bad >= 0)
                throw new InvalidDataException(
                    $"Row {_row.Position}: column '{_mapper.InputColumns[i].Name}' holds {target[bad]} at index {bad}; inputs must be finite numbers.");
        }
    }

    private static int IndexOfNonFinite(ReadOnlySpan<float> values)
    {
        for (var i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i])) return i;
        return -1;
    }
}
