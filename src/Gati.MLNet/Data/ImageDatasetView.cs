using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Data;

/// <summary>
/// A streaming <see cref="IDataView"/> over an <see cref="ImageRecordSource"/>: records are read from disk as
/// cursors move, one at a time. Columns: <c>Image</c> (normalised pixels, Vector&lt;Single, C, H, W&gt;) and
/// <c>Label</c> (Key&lt;UInt32, classes&gt; with class names as KeyValues).
/// </summary>
internal sealed class ImageDatasetView : IDataView
{
    public const string ImageColumnName = "Image";
    public const string LabelColumnName = "Label";

    private readonly ImageRecordSource _source;
    private readonly float[][] _lookup;

    public ImageDatasetView(ImageRecordSource source, ChannelNormalization normalization)
    {
        _source = source;
        normalization.CheckChannels(source.Shape.Channels, source.Name);
        Normalization = normalization;
        _lookup = normalization.ByteLookup();
        Schema = BuildSchema(source, normalization);
    }

    public ChannelNormalization Normalization { get; }

    public bool CanShuffle => _source.SupportsRandomAccess;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _source.RowCount;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var active = new bool[Schema.Count];
        foreach (var column in columnsNeeded) active[column.Index] = true;
        return new Cursor(this, active, CanShuffle ? rand : null);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private static DataViewSchema BuildSchema(ImageRecordSource source, ChannelNormalization normalization)
    {
        var builder = new DataViewSchema.Builder();
        var shape = source.Shape;
        builder.AddColumn(ImageColumnName, new VectorDataViewType(NumberDataViewType.Single, shape.Channels, shape.Height, shape.Width),
            Annotations.Normalization(normalization));
        builder.AddColumn(LabelColumnName, new KeyDataViewType(typeof(uint), source.ClassNames.Count),
            Annotations.KeyValues(source.ClassNames));
        return builder.ToSchema();
    }

    private sealed class Cursor : NumberedRowCursor
    {
        private readonly ImageDatasetView _parent;
        private readonly ImageRecordReader _reader;
        private readonly byte[] _pixels;
        private int _label;
        private bool _disposed;

        public Cursor(ImageDatasetView parent, bool[] active, Random? rand)
            : base(parent.Schema, active, parent._source.RowCount, rand)
        {
            _parent = parent;
            _pixels = new byte[parent._source.Shape.Size];
            _reader = parent._source.Open(readImages: active[0]);
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId value) =>
        {
            EnsurePositioned();
            value = new DataViewRowId((ulong)Row, 0);
        };

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!IsActive(column.Index))
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            if (column.Index == 0)
            {
                if (typeof(TValue) != typeof(VBuffer<float>))
                    throw new InvalidOperationException($"Column '{ImageColumnName}' is VBuffer<float>, not {typeof(TValue).Name}.");
                ValueGetter<VBuffer<float>> image = GetImage;
                return (ValueGetter<TValue>)(Delegate)image;
            }
            if (typeof(TValue) != typeof(uint))
                throw new InvalidOperationException($"Column '{LabelColumnName}' is a UInt32 key, not {typeof(TValue).Name}.");
            ValueGetter<uint> label = (ref uint value) =>
            {
                EnsurePositioned();
                value = (uint)_label + 1; // keys are 1-based; 0 means missing
            };
            return (ValueGetter<TValue>)(Delegate)label;
        }

        private void GetImage(ref VBuffer<float> value)
        {
            EnsurePositioned();
            var size = _pixels.Length;
            var editor = VBufferEditor.Create(ref value, size);
            var shape = _parent._source.Shape;
            var plane = shape.Height * shape.Width;
            var values = editor.Values;
            for (var c = 0; c < shape.Channels; c++)
            {
                var table = _parent._lookup[c];
                var offset = c * plane;
                for (var i = 0; i < plane; i++) values[offset + i] = table[_pixels[offset + i]];
            }
            value = editor.Commit();
        }

        public override bool MoveNext()
        {
            if (_disposed || !Advance()) return false;
            if (IsShuffled) _reader.Seek(Row);
            _reader.ReadNext(_pixels, out _label);
            return true;
        }

        private void EnsurePositioned()
        {
            if (!IsOnRow)
                throw new InvalidOperationException("The cursor is not on a row: call MoveNext first.");
        }

        protected override void Dispose(bool disposing)
        {
            if (_disposed) return;
            if (disposing) _reader.Dispose();
            _disposed = true;
            base.Dispose(disposing);
        }
    }
}
