namespace Gati.MLNet.Online;

/// <summary>
/// The most recent shadow rows within a byte budget: adding a row evicts the oldest until the rows held fit. Safe for
/// one writer and many readers; readers get a snapshot.
/// </summary>
public sealed class ShadowWindow
{
    private readonly object _gate = new();
    private readonly Queue<(ShadowRow Row, long Bytes)> _rows = new();
    private long _bytes;

    /// <summary>Creates a window holding at most <paramref name="budgetBytes"/> of rows.</summary>
    public ShadowWindow(long budgetBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(budgetBytes, 1024);
        BudgetBytes = budgetBytes;
    }

    /// <summary>The most bytes the rows may hold.</summary>
    public long BudgetBytes { get; }

    /// <summary>Bytes held now (always at most <see cref="BudgetBytes"/>).</summary>
    public long Bytes
    {
        get
        {
            lock (_gate) return _bytes;
        }
    }

    /// <summary>Rows held now.</summary>
    public int Count
    {
        get
        {
            lock (_gate) return _rows.Count;
        }
    }

    /// <summary>Rows evicted so far.</summary>
    public long Evicted { get; private set; }

    /// <summary>
    /// Adds a row at its size as complete (features of every cache layer and the base answer: rows that exited early
    /// are added once the rest of the network has run), evicting the oldest rows beyond the budget. A row larger
    /// than the whole budget is not kept.
    /// </summary>
    public void Add(ShadowRow row)
    {
        ArgumentNullException.ThrowIfNull(row);
        var bytes = row.Bytes;
        lock (_gate)
        {
            if (bytes > BudgetBytes) return;
            _rows.Enqueue((row, bytes));
            _bytes += bytes;
            while (_bytes > BudgetBytes)
            {
                var (_, evicted) = _rows.Dequeue();
                _bytes -= evicted;
                Evicted++;
            }
        }
    }

    /// <summary>The rows held, oldest first.</summary>
    public ShadowRow[] Snapshot()
    {
        lock (_gate) return _rows.Select(r => r.Row).ToArray();
    }

    /// <summary>The rows that arrived after <paramref name="sequence"/>, oldest first.</summary>
    public ShadowRow[] Since(long sequence)
    {
        lock (_gate) return _rows.Where(r => r.Row.Sequence > sequence).Select(r => r.Row).ToArray();
    }
}
