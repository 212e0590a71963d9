using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Training;

/// <summary>
/// The rows of a source view followed by <c>copies</c> more passes over them in which the image column is augmented as
/// the base model was trained (a random crop from the image padded by <c>padding</c> pixels, and a random horizontal
/// flip); every other column passes through. The augmentation of a row depends only on the seed, the pass and the row's
/// position, so every cursor and every process sees the same rows. Created by
/// <see cref="DataCatalogExtensions.AugmentImages"/>; used to give predictor distillation more rows than the dataset has
/// (the base model labels any image).
/// </summary>
internal sealed class AugmentedImagesView : IDataView
{
    private const int Purpose = 0xa06;

    private readonly IDataView _source;
    private readonly int _imageColumn;
    private readonly ImageAugmentation _augmentation;
    private readonly int _size;

    public AugmentedImagesView(IDataView source, string imageColumnName, int copies, int padding, bool flip, int seed)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(copies);
        ArgumentOutOfRangeException.ThrowIfNegative(padding);
        var column = source.Schema.GetColumnOrNull(imageColumnName)
            ?? throw new ArgumentException($"Image column '{imageColumnName}' not found.", nameof(imageColumnName));
        if (column.Type is not VectorDataViewType { ItemType: var item, Dimensions.Length: 3 } vector || item != NumberDataViewType.Single || vector.Size == 0)
            throw new ArgumentException($"Column '{imageColumnName}' must be Vector<Single, C, H, W>, got {column.Type}.", nameof(imageColumnName));
        _source = source;
        _imageColumn = column.Index;
        var dims = vector.Dimensions;
        _size = vector.Size;
        _augmentation = new ImageAugmentation(dims[0], dims[1], dims[2], padding, flip);
        Copies = copies;
        Seed = seed;
    }

    /// <summary>Augmented passes after the original rows.</summary>
    public int Copies { get; }

    public int Seed { get; }

    public bool CanShuffle => false;

    public DataViewSchema Schema => _source.Schema;

    public long? GetRowCount() => _source.GetRowCount() is { } rows ? rows * (Copies + 1) : null;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        new Cursor(this, columnsNeeded.ToArray());

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly AugmentedImagesView _parent;
        private readonly DataViewSchema.Column[] _needed;
        private readonly bool[] _active;
        private readonly float[] _original;
        private readonly float[] _augmented;
        private DataViewRowCursor _inner;
        private ValueGetter<VBuffer<float>>? _image;
        private int _pass;
        private long _row = -1; // position within the pass
        private long _position = -1;
        private bool _imageReady;
        private bool _done;

        public Cursor(AugmentedImagesView parent, DataViewSchema.Column[] needed)
        {
            _parent = parent;
            _needed = needed;
            _active = new bool[parent.Schema.Count];
            foreach (var column in needed) _active[column.Index] = true;
            _original = new float[parent._size];
            _augmented = new float[parent._size];
            _inner = Open();
        }

        private DataViewRowCursor Open()
        {
            var inner = _parent._source.GetRowCursor(_needed);
            _image = _active[_parent._imageColumn] ? inner.GetGetter<VBuffer<float>>(_parent.Schema[_parent._imageColumn]) : null;
            return inner;
        }

        public override DataViewSchema Schema => _parent.Schema;

        public override long Position => _position;

        public override long Batch => 0;

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<DataViewRowId> GetIdGetter() =>
            (ref DataViewRowId value) => value = new DataViewRowId((ulong)_row, (ulong)_pass);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index]) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            if (column.Index != _parent._imageColumn)
            {
                // Resolved per call: the inner cursor is replaced at each pass.
                ValueGetter<TValue>? getter = null;
                DataViewRowCursor? owner = null;
                return (ref TValue value) =>
                {
                    if (!ReferenceEquals(owner, _inner))
                    {
                        owner = _inner;
                        getter = _inner.GetGetter<TValue>(column);
                    }
                    getter!(ref value);
                };
            }
            if (typeof(TValue) != typeof(VBuffer<float>))
                throw new InvalidOperationException($"Column '{column.Name}' is VBuffer<float>, not {typeof(TValue).Name}.");
            ValueGetter<VBuffer<float>> image = GetImage;
            return (ValueGetter<TValue>)(Delegate)image;
        }

        private void GetImage(ref VBuffer<float> value)
        {
            if (_position < 0 || _done) throw new InvalidOperationException("The cursor is not on a row: call MoveNext first.");
            if (_pass == 0)
            {
                _image!(ref value);
                return;
            }
            if (!_imageReady)
            {
                VBuffer<float> source = new(_original.Length, _original);
                _image!(ref source);
                if (source.Length != _original.Length)
                    throw new InvalidDataException($"Image of row {_row} has {source.Length} values, expected {_original.Length}.");
                source.CopyTo(_original);
                var random = new Random(Seeds.Derive(Seeds.Derive(_parent.Seed, _pass, Purpose), unchecked((int)_row), Purpose));
                _parent._augmentation.Apply(_original, _augmented, 1, random);
                _imageReady = true;
            }
            var editor = VBufferEditor.Create(ref value, _augmented.Length);
            _augmented.CopyTo(editor.Values);
            value = editor.Commit();
        }

        public override bool MoveNext()
        {
            if (_done) return false;
            _imageReady = false;
            while (!_inner.MoveNext())
            {
                if (_pass == _parent.Copies)
                {
                    _done = true;
                    return false;
                }
                _inner.Dispose();
                _pass++;
                _row = -1;
                _inner = Open();
            }
            _row++;
            _position++;
            return true;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
