using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Data;

/// <summary>
/// Reads batches of rows made of known-size Vector&lt;Single&gt; columns and one optional key column from an
/// <see cref="IDataView"/>, optionally shuffled: through the view's own random-order cursor when it can
/// shuffle, otherwise through a bounded shuffle pool over a sequential cursor (at most
/// <c>poolRows</c> rows and <c>poolBytes</c> bytes). Rejects missing keys and non-finite values with the row number.
/// </summary>
internal sealed class VectorBatchReader
{
    private readonly IDataView _data;
    private readonly DataViewSchema.Column[] _vectors;
    private readonly int[] _sizes;
    private readonly DataViewSchema.Column? _key;
    private readonly int _poolRows;

    public VectorBatchReader(IDataView data, IReadOnlyList<string> vectorColumns, string? keyColumn, int poolRows, long poolBytes = 512L << 20)
    {
        _data = data;
        _vectors = vectorColumns.Select(name => TrainingColumns.RequireImage(data.Schema, name)).ToArray();
        _sizes = _vectors.Select(c => ((VectorDataViewType)c.Type).Size).ToArray();
        if (keyColumn is not null) _key = TrainingColumns.RequireKeyLabel(data.Schema, keyColumn, out _);
        var rowBytes = Math.Max(1L, _sizes.Sum(s => (long)s) * sizeof(float));
        _poolRows = (int)Math.Clamp(Math.Min(poolRows, poolBytes / rowBytes), 1, int.MaxValue);
    }

    /// <summary>Values per row of each vector column.</summary>
    public IReadOnlyList<int> Sizes => _sizes;

    /// <summary>Rows the shuffle pool holds (after the byte bound).</summary>
    public int PoolRows => _poolRows;

    /// <summary>Allocates one buffer per vector column for <paramref name="batchSize"/> rows.</summary>
    public float[][] AllocateBuffers(int batchSize) => _sizes.Select(size => new float[checked(batchSize * size)]).ToArray();

    /// <summary>
    /// Enumerates batches; each yielded value is the number of rows written to <paramref name="buffers"/> (row-major,
    /// one per vector column) and <paramref name="keys"/> (0-based class indices; untouched without a key column).
    /// </summary>
    public IEnumerable<int> Read(int batchSize, float[][] buffers, long[] keys, Random? shuffle)
    {
        var columns = _key is { } keyColumn ? _vectors.Append(keyColumn) : _vectors;
        using var cursor = _data.GetRowCursor(columns, shuffle is not null && _data.CanShuffle ? shuffle : null);
        var getters = _vectors.Select(c => cursor.GetGetter<VBuffer<float>>(c)).ToArray();
        var getKey = _key is { } k ? cursor.GetGetter<uint>(k) : null;
        VBuffer<float> value = default;
        uint key = 0;

        // Reads the cursor's next row into row slot `slot` of `targets`; false at the end.
        bool Next(float[][] targets, int slot, long[] targetKeys)
        {
            if (!cursor.MoveNext()) return false;
            for (var i = 0; i < getters.Length; i++)
            {
                getters[i](ref value);
                var size = _sizes[i];
                if (value.Length != size)
                    throw new InvalidDataException($"Row {cursor.Position}: column '{_vectors[i].Name}' has {value.Length} values, expected {size}.");
                var target = targets[i].AsSpan(slot * size, size);
                value.CopyTo(target);
                var bad = target.IndexOfAnyExceptInRange(float.MinValue, float.MaxValue);
                if (bad >= 0)
                    throw new InvalidDataException($"Row {cursor.Position}: column '{_vectors[i].Name}' holds {target[bad]} at index {bad}; values must be finite.");
            }
            if (getKey is not null)
            {
                getKey(ref key);
                if (key == 0)
                    throw new InvalidDataException($"Row {cursor.Position}: column '{_key!.Value.Name}' is missing (key 0): every training row needs a known label.");
                targetKeys[slot] = key - 1;
            }
            return true;
        }

        void Copy(float[][] from, long[] fromKeys, int fromSlot, float[][] to, long[] toKeys, int toSlot)
        {
            for (var i = 0; i < _sizes.Length; i++)
                from[i].AsSpan(fromSlot * _sizes[i], _sizes[i]).CopyTo(to[i].AsSpan(toSlot * _sizes[i], _sizes[i]));
            toKeys[toSlot] = fromKeys[fromSlot];
        }

        if (shuffle is null || _data.CanShuffle)
        {
            var count = 0;
            while (Next(buffers, count, keys))
            {
                if (++count == batchSize)
                {
                    yield return count;
                    count = 0;
                }
            }
            if (count > 0) yield return count;
            yield break;
        }

        // Shuffle pool: each incoming row takes the place of a random pooled row, which is emitted.
        var pool = AllocateBuffers(_poolRows);
        var poolKeys = new long[_poolRows];
        var filled = 0;
        while (filled < _poolRows && Next(pool, filled, poolKeys)) filled++;
        var incoming = AllocateBuffers(1);
        var incomingKey = new long[1];
        var batch = 0;
        while (filled > 0)
        {
            var pick = shuffle.Next(filled);
            Copy(pool, poolKeys, pick, buffers, keys, batch);
            if (Next(incoming, 0, incomingKey))
            {
                Copy(incoming, incomingKey, 0, pool, poolKeys, pick);
            }
            else
            {
                filled--;
                Copy(pool, poolKeys, filled, pool, poolKeys, pick);
            }
            if (++batch == batchSize)
            {
                yield return batch;
                batch = 0;
            }
        }
        if (batch > 0) yield return batch;
    }
}
