using Microsoft.ML;

namespace Gati.MLNet.Data;

/// <summary>
/// What the cursors of Gati's file-backed views share: a fixed number of rows read by their number, in file order or,
/// given a random source, in a shuffled order; the active columns; the position (-1 before the first row, the row
/// count after the last).
/// </summary>
internal abstract class NumberedRowCursor : DataViewRowCursor
{
    private readonly DataViewSchema _schema;
    private readonly bool[] _active;
    private readonly long _rowCount;
    private readonly int[]? _order;
    private long _position = -1;

    private protected NumberedRowCursor(DataViewSchema schema, bool[] active, long rowCount, Random? rand)
    {
        _schema = schema;
        _active = active;
        _rowCount = rowCount;
        if (rand is not null)
        {
            _order = Enumerable.Range(0, checked((int)rowCount)).ToArray();
            rand.Shuffle(_order);
        }
    }

    public override DataViewSchema Schema => _schema;

    public override long Position => _position;

    public override long Batch => 0;

    public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

    /// <summary>Whether the column of index <paramref name="column"/> is active.</summary>
    private protected bool IsActive(int column) => _active[column];

    /// <summary>Whether rows come in a shuffled order (readers that stream in file order must seek).</summary>
    private protected bool IsShuffled => _order is not null;

    /// <summary>The number of the row at the current position.</summary>
    private protected long Row => _order is null ? _position : _order[_position];

    /// <summary>Whether the current position is on a row.</summary>
    private protected bool IsOnRow => _position >= 0 && _position < _rowCount;

    /// <summary>Moves to the next position; false, with the position past the last row, when there is none.</summary>
    private protected bool Advance()
    {
        if (_position + 1 >= _rowCount)
        {
            End();
            return false;
        }
        _position++;
        return true;
    }

    /// <summary>Moves the position past the last row.</summary>
    private protected void End() => _position = _rowCount;
}
