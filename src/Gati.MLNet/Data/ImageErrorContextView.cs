using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Data;

/// <summary>
/// Passes a view through unchanged, but when reading a row fails (a corrupt or missing image file), rethrows as
/// a <see cref="DatasetFormatException"/> naming the row's file: ML.NET's image loader reports only
/// "Invalid input stream contents". Without a path column, it only unwraps a <see cref="DatasetFormatException"/>
/// that ML.NET's background readers wrapped in their own exception.
/// </summary>
internal sealed class ImageErrorContextView : IDataView
{
    private readonly IDataView _inner;
    private readonly DataViewSchema.Column? _path;
    private readonly (int Column, Action<string> Check)? _check;

    /// <param name="inner">The view to pass through.</param>
    /// <param name="pathColumn">The column naming each row's file, or null.</param>
    /// <param name="check">With a path column: a check of the row's file that runs before <c>Column</c> is read
    /// (e.g. an image's header before it is decoded); it throws a <see cref="DatasetFormatException"/>.</param>
    public ImageErrorContextView(IDataView inner, string? pathColumn, (string Column, Action<string> Check)? check = null)
    {
        _inner = inner;
        _path = pathColumn is null ? null : inner.Schema[pathColumn];
        if (check is { } c) _check = (inner.Schema[c.Column].Index, c.Check);
    }

    public bool CanShuffle => _inner.CanShuffle;

    public DataViewSchema Schema => _inner.Schema;

    public long? GetRowCount() => _inner.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        new Cursor(_inner.GetRowCursor(WithPath(columnsNeeded), rand), _path, columnsNeeded, _check);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        _inner.GetRowCursorSet(WithPath(columnsNeeded), n, rand)
            .Select(c => (DataViewRowCursor)new Cursor(c, _path, columnsNeeded, _check)).ToArray();

    private IEnumerable<DataViewSchema.Column> WithPath(IEnumerable<DataViewSchema.Column> columns) =>
        _path is { } path ? columns.Append(path).DistinctBy(c => c.Index) : columns;

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly DataViewRowCursor _inner;
        private readonly ValueGetter<ReadOnlyMemory<char>>? _pathGetter;
        private readonly HashSet<int> _requested;
        private readonly (int Column, Action<string> Check)? _check;

        public Cursor(DataViewRowCursor inner, DataViewSchema.Column? path, IEnumerable<DataViewSchema.Column> requested, (int Column, Action<string> Check)? check)
        {
            _inner = inner;
            _pathGetter = path is { } column ? inner.GetGetter<ReadOnlyMemory<char>>(column) : null;
            _requested = requested.Select(c => c.Index).ToHashSet();
            _check = _pathGetter is null ? null : check;
        }

        public override DataViewSchema Schema => _inner.Schema;

        public override long Position => _inner.Position;

        public override long Batch => _inner.Batch;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _inner.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => _requested.Contains(column.Index) && _inner.IsColumnActive(column);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            var getter = _inner.GetGetter<TValue>(column);
            var check = _check is { } c && c.Column == column.Index ? c.Check : null;
            return (ref TValue value) =>
            {
                try
                {
                    if (check is not null) check(CurrentPath());
                    getter(ref value);
                }
                catch (Exception ex) when (ex is not DatasetFormatException and not OperationCanceledException)
                {
                    throw Describe(ex);
                }
            };
        }

        public override bool MoveNext()
        {
            try
            {
                return _inner.MoveNext();
            }
            catch (Exception ex) when (ex is not DatasetFormatException and not OperationCanceledException)
            {
                // Transforms that read ahead (batching, ML.NET's parallel readers) load images while moving, so the
                // current row need not be the failing one: only unwrap an error that already names its file.
                throw UnwrapOnly(ex);
            }
        }

        private static Exception UnwrapOnly(Exception ex)
        {
            for (var inner = ex; inner is not null; inner = inner.InnerException)
                if (inner is DatasetFormatException named) return named;
            return ex;
        }

        private Exception Describe(Exception ex)
        {
            var unwrapped = UnwrapOnly(ex);
            if (unwrapped is DatasetFormatException || _pathGetter is null) return unwrapped;
            var root = ex;
            while (root.InnerException is not null) root = root.InnerException;
            string path;
            try
            {
                path = CurrentPath();
            }
            catch (InvalidOperationException)
            {
                return ex; // no current row to blame
            }
            var problem = root is FileNotFoundException ? "image file not found" : $"cannot read image ({root.Message})";
            return new DatasetFormatException(path, problem, ex);
        }

        private string CurrentPath()
        {
            ReadOnlyMemory<char> value = default;
            _pathGetter!(ref value);
            return value.ToString();
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
