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

    public ImageErrorContextView(IDataView inner, string? pathColumn)
    {
        _inner = inner;
        _path = pathColumn is null ? null : inner.Schema[pathColumn];
    }

    public bool CanShuffle => _inner.CanShuffle;

    public DataViewSchema Schema => _inner.Schema;

    public long? GetRowCount() => _inner.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        new Cursor(_inner.GetRowCursor(WithPath(columnsNeeded), rand), _path, columnsNeeded);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        _inner.GetRowCursorSet(WithPath(columnsNeeded), n, rand)
            .Select(c => (DataViewRowCursor)new Cursor(c, _path, columnsNeeded)).ToArray();

    private IEnumerable<DataViewSchema.Column> WithPath(IEnumerable<DataViewSchema.Column> columns) =>
        _path is { } path ? columns.Append(path).DistinctBy(c => c.Index) : columns;

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly DataViewRowCursor _inner;
        private readonly ValueGetter<ReadOnlyMemory<char>>? _pathGetter;
        private readonly HashSet<int> _requested;

        public Cursor(DataViewRowCursor inner, DataViewSchema.Column? path, IEnumerable<DataViewSchema.Column> requested)
        {
            _inner = inner;
            _pathGetter = path is { } column ? inner.GetGetter<ReadOnlyMemory<char>>(column) : null;
            _requested = requested.Select(c => c.Index).ToHashSet();
        }

        public override DataViewSchema Schema => _inner.Schema;

        public override long Position => _inner.Position;

        public override long Batch => _inner.Batch;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _inner.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => _requested.Contains(column.Index) && _inner.IsColumnActive(column);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            var getter = _inner.GetGetter<TValue>(column);
            return (ref TValue value) =>
            {
                try
                {
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
                ReadOnlyMemory<char> value = default;
                _pathGetter(ref value);
                path = value.ToString();
            }
            catch (InvalidOperationException)
            {
                return ex; // no current row to blame
            }
            var problem = root is FileNotFoundException ? "image file not found" : $"cannot read image ({root.Message})";
            return new DatasetFormatException(path, problem, ex);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
