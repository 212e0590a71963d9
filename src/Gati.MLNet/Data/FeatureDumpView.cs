using System.Buffers.Binary;
using System.Globalization;
using Microsoft.Win32.SafeHandles;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Data;

/// <summary>
/// A feature dump as a streaming, shuffle-capable <see cref="IDataView"/>: columns <c>Layer{n}</c>
/// (Vector&lt;Single, C, H, W&gt;), <c>BaseLogits</c>, <c>BasePredictedLabel</c> and <c>Label</c>. Rows are read from
/// the chunk files with positioned reads, in order or in a random permutation.
/// </summary>
internal sealed class FeatureDumpView : IDataView
{
    private readonly string _directory;
    private readonly FeatureDumpManifest _manifest;
    private readonly FeatureDumpManifest.LayerEntry[] _layers;
    private readonly int _classes;
    private readonly int _width;

    public FeatureDumpView(string directory, IReadOnlyList<int>? layers, string layerColumnPrefix, string logitsColumn, string predictedColumn, string labelColumn)
    {
        _directory = directory;
        _manifest = FeatureDumpManifest.Read(directory);
        var manifestPath = Path.Combine(directory, FeatureDumpManifest.FileName);
        if (!_manifest.Complete)
            throw new DatasetFormatException(manifestPath,
                $"the dump is incomplete ({_manifest.Chunks.Count} of {_manifest.ChunkCount} chunks): finish it by running the same dump again");
        _layers = layers is null
            ? _manifest.Layers.ToArray()
            : layers.SelectMany(l => _manifest.Layers.Where(e => e.Layer == l).DefaultIfEmpty()
                .Select(e => e ?? throw new ArgumentException($"The dump in '{directory}' has layers {string.Join(", ", _manifest.Layers.Select(e => e.Layer).Distinct())}, not {l}."))).ToArray();
        _classes = _manifest.ClassNames.Count;
        _width = _manifest.DataType == "float16" ? 2 : 4;
        ValidateChunks();

        var builder = new DataViewSchema.Builder();
        foreach (var layer in _layers)
            builder.AddColumn(layerColumnPrefix + layer.Layer.ToString(CultureInfo.InvariantCulture) + (layer.Reduction.Length == 0 ? "" : "." + layer.Reduction),
                new VectorDataViewType(NumberDataViewType.Single, layer.Shape));
        builder.AddColumn(logitsColumn, new VectorDataViewType(NumberDataViewType.Single, _classes), Annotations.SlotNames(_manifest.ClassNames));
        builder.AddColumn(predictedColumn, new KeyDataViewType(typeof(uint), _classes), Annotations.KeyValues(_manifest.ClassNames));
        builder.AddColumn(labelColumn, new KeyDataViewType(typeof(uint), _classes), Annotations.KeyValues(_manifest.ClassNames));
        Schema = builder.ToSchema();
    }

    public FeatureDumpManifest Manifest => _manifest;

    public bool CanShuffle => true;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _manifest.Rows;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var active = new bool[Schema.Count];
        foreach (var column in columnsNeeded) active[column.Index] = true;
        return new Cursor(this, active, rand);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private void ValidateChunks()
    {
        var chunks = _manifest.Chunks.OrderBy(c => c.Index).ToArray();
        if (chunks.Length != _manifest.ChunkCount || chunks.Select((c, i) => c.Index != i).Any(bad => bad))
            throw new DatasetFormatException(Path.Combine(_directory, FeatureDumpManifest.FileName), "the chunk list is incomplete or out of order");
        foreach (var chunk in chunks)
        {
            var expectedRows = (int)Math.Min(_manifest.ChunkRows, _manifest.Rows - (long)chunk.Index * _manifest.ChunkRows);
            foreach (var layer in _layers) CheckChunk(Name(layer), chunk.Index, expectedRows, layer.Size, _width == 2 ? FeatureDumpChunks.KindFloat16 : FeatureDumpChunks.KindFloat32, layer.Size * (long)_width);
            CheckChunk("teacher", chunk.Index, expectedRows, _classes, FeatureDumpChunks.KindTeacher, (_classes + 2) * 4L);
        }
    }

    private static string Name(FeatureDumpManifest.LayerEntry layer) => layer.Key;

    private void CheckChunk(string name, int chunk, int rows, int valuesPerRow, int kind, long rowBytes)
    {
        var path = FeatureDumpChunks.Path(_directory, name, chunk);
        if (!File.Exists(path)) throw new DatasetFormatException(path, "chunk file is missing");
        using var file = File.OpenRead(path);
        Span<byte> header = stackalloc byte[FeatureDumpChunks.HeaderBytes];
        if (file.Read(header) != header.Length || !header[..8].SequenceEqual(FeatureDumpChunks.Magic))
            throw new DatasetFormatException(path, "not a Gati feature chunk (bad header)");
        var headerKind = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
        var headerRows = BinaryPrimitives.ReadInt32LittleEndian(header[16..]);
        var headerValues = BinaryPrimitives.ReadInt32LittleEndian(header[20..]);
        var headerChunk = BinaryPrimitives.ReadInt32LittleEndian(header[24..]);
        if (headerKind != kind || headerRows != rows || headerValues != valuesPerRow || headerChunk != chunk)
            throw new DatasetFormatException(path,
                $"chunk header (kind {headerKind}, {headerRows} rows of {headerValues} values, chunk {headerChunk}) does not match the manifest " +
                $"(kind {kind}, {rows} rows of {valuesPerRow} values, chunk {chunk}): the file belongs to another dump");
        var expected = FeatureDumpChunks.HeaderBytes + rowBytes * rows;
        if (file.Length != expected)
            throw new DatasetFormatException(path, $"file is {file.Length} bytes, expected {expected}: {(file.Length < expected ? "truncated" : "trailing data")}");
    }

    private sealed class Cursor : NumberedRowCursor
    {
        private readonly FeatureDumpView _parent;
        private readonly Dictionary<(string, int), SafeFileHandle> _handles = [];
        private readonly byte[][] _rowBytes;
        private readonly byte[] _teacher;
        private long _row;
        private bool _disposed;

        public Cursor(FeatureDumpView parent, bool[] active, Random? rand)
            : base(parent.Schema, active, parent._manifest.Rows, rand)
        {
            _parent = parent;
            _rowBytes = parent._layers.Select(l => new byte[l.Size * parent._width]).ToArray();
            _teacher = new byte[(parent._classes + 2) * 4];
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId value) => value = new DataViewRowId((ulong)_row, 0);

        public override bool MoveNext()
        {
            if (_disposed)
            {
                End();
                return false;
            }
            if (!Advance()) return false;
            _row = Row;
            var chunk = (int)(_row / _parent._manifest.ChunkRows);
            var inChunk = _row % _parent._manifest.ChunkRows;
            for (var i = 0; i < _parent._layers.Length; i++)
                if (IsActive(i)) Read(Name(_parent._layers[i]), chunk, inChunk, _rowBytes[i]);
            var layers = _parent._layers.Length;
            if (IsActive(layers) || IsActive(layers + 1) || IsActive(layers + 2)) Read("teacher", chunk, inChunk, _teacher);
            return true;
        }

        private void Read(string name, int chunk, long inChunk, byte[] target)
        {
            if (!_handles.TryGetValue((name, chunk), out var handle))
            {
                handle = File.OpenHandle(FeatureDumpChunks.Path(_parent._directory, name, chunk));
                _handles[(name, chunk)] = handle;
            }
            var offset = FeatureDumpChunks.HeaderBytes + inChunk * target.Length;
            var read = RandomAccess.Read(handle, target, offset);
            if (read != target.Length)
                throw new DatasetFormatException(FeatureDumpChunks.Path(_parent._directory, name, chunk), $"file ends inside row {inChunk} (truncated after it was opened)");
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!IsActive(column.Index)) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            var layers = _parent._layers.Length;
            var classes = _parent._classes;
            Delegate getter;
            if (column.Index < layers)
            {
                var bytes = _rowBytes[column.Index];
                var size = _parent._layers[column.Index].Size;
                var half = _parent._width == 2;
                getter = (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) =>
                {
                    var editor = VBufferEditor.Create(ref value, size);
                    var values = editor.Values;
                    if (half)
                        for (var i = 0; i < size; i++) values[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(bytes.AsSpan(i * 2));
                    else if (BitConverter.IsLittleEndian)
                        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).CopyTo(values);
                    else
                        for (var i = 0; i < size; i++) values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(i * 4));
                    value = editor.Commit();
                });
            }
            else if (column.Index == layers)
            {
                getter = (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) =>
                {
                    var editor = VBufferEditor.Create(ref value, classes);
                    for (var c = 0; c < classes; c++) editor.Values[c] = BinaryPrimitives.ReadSingleLittleEndian(_teacher.AsSpan(c * 4));
                    value = editor.Commit();
                });
            }
            else
            {
                var offset = column.Index == layers + 1 ? classes * 4 : (classes + 1) * 4;
                getter = (ValueGetter<uint>)((ref uint value) => value = BinaryPrimitives.ReadUInt32LittleEndian(_teacher.AsSpan(offset)));
            }
            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}, not {typeof(TValue).Name}.");
        }

        protected override void Dispose(bool disposing)
        {
            if (_disposed) return;
            if (disposing)
                foreach (var handle in _handles.Values) handle.Dispose();
            _disposed = true;
            base.Dispose(disposing);
        }
    }
}
