using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// A lazily evaluated view that appends a <see cref="BatchMapper"/>'s columns to its source and computes them
/// in batches. Each cursor reads its source through one cursor: it reads a batch of rows ahead, keeping the
/// source columns the consumer asked for in a <see cref="RowBuffer"/> per column, runs the mapper once for the
/// batch, then serves the rows one by one. Because the source is read once, chains of batched transformers
/// (base model, feature extractor, predictors) compute each stage once per row. Shuffling passes through to a
/// source that can shuffle.
/// </summary>
internal sealed class BatchMappedDataView : IDataView
{
    private readonly IDataView _source;
    private readonly BatchMapper _mapper;

    public BatchMappedDataView(IDataView source, BatchMapper mapper, GatiTransformerBase? owner = null)
    {
        _source = source;
        _mapper = mapper;
        Owner = owner;
    }

    /// <summary>The view this one reads from.</summary>
    public IDataView Source => _source;

    /// <summary>The transformer that produced this view, if any (lets later pipeline stages find the base model).</summary>
    public GatiTransformerBase? Owner { get; }

    public bool CanShuffle => _source.CanShuffle;

    public DataViewSchema Schema => _mapper.OutputSchema;

    public long? GetRowCount() => _source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var inputCount = _source.Schema.Count;
        var active = new bool[Schema.Count];
        foreach (var column in columnsNeeded) active[column.Index] = true;
        var outputsActive = active.Skip(inputCount).ToArray();
        var passThrough = _source.Schema.Where(c => active[c.Index]).ToArray();
        if (!outputsActive.Any(a => a))
            return new PassThroughCursor(this, _source.GetRowCursor(passThrough, rand), active);
        var sourceColumns = passThrough.Concat(_mapper.InputColumns).DistinctBy(c => c.Index).ToArray();
        return new Cursor(this, _source.GetRowCursor(sourceColumns, rand), passThrough, active, outputsActive);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private ValueGetter<TValue> OutputGetter<TValue>(DataViewSchema.Column column, Func<Array?> storage, Func<int> slot)
    {
        var output = _mapper.Outputs[column.Index - _source.Schema.Count];
        if (typeof(TValue) != output.ValueType)
            throw new InvalidOperationException($"Column '{column.Name}' holds {output.ValueType.Name}, not {typeof(TValue).Name}.");
        return (ValueGetter<TValue>)output.MakeGetter(() => storage()!, slot);
    }

    /// <summary>Used when no output column is requested: the mapper never runs.</summary>
    private sealed class PassThroughCursor(BatchMappedDataView parent, DataViewRowCursor source, bool[] active) : DataViewRowCursor
    {
        public override DataViewSchema Schema => parent.Schema;

        public override long Position => source.Position;

        public override long Batch => source.Batch;

        public override ValueGetter<DataViewRowId> GetIdGetter() => source.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!active[column.Index]) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            return source.GetGetter<TValue>(source.Schema[column.Index]);
        }

        public override bool MoveNext() => source.MoveNext();

        protected override void Dispose(bool disposing)
        {
            if (disposing) source.Dispose();
            base.Dispose(disposing);
        }
    }

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly BatchMappedDataView _parent;
        private readonly DataViewRowCursor _source;
        private readonly bool[] _active;
        private readonly bool[] _outputsActive;
        private readonly BatchInputReader _inputs;
        private readonly Dictionary<int, RowBuffer> _passThrough;
        private readonly DataViewRowId[] _ids;
        private readonly ValueGetter<DataViewRowId> _idGetter;
        private readonly Array?[] _outputs;
        private int _batchCount;
        private int _slot = -1;
        private long _position = -1;
        private bool _exhausted;

        public Cursor(BatchMappedDataView parent, DataViewRowCursor source, DataViewSchema.Column[] passThrough, bool[] active, bool[] outputsActive)
        {
            _parent = parent;
            _source = source;
            _active = active;
            _outputsActive = outputsActive;
            var mapper = parent._mapper;
            _inputs = new BatchInputReader(mapper, source, mapper.BatchSize);
            _passThrough = passThrough.ToDictionary(c => c.Index, c => RowBuffer.Create(source, source.Schema[c.Index], mapper.BatchSize));
            _ids = new DataViewRowId[mapper.BatchSize];
            _idGetter = source.GetIdGetter();
            _outputs = new Array?[mapper.Outputs.Count];
            for (var j = 0; j < _outputs.Length; j++)
                if (outputsActive[j]) _outputs[j] = mapper.Outputs[j].Allocate(mapper.BatchSize);
        }

        public override DataViewSchema Schema => _parent.Schema;

        public override long Position => _position;

        public override long Batch => 0;

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId value) => value = _ids[CurrentSlot()];

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index]) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            if (column.Index < _parent._source.Schema.Count)
            {
                var buffer = _passThrough[column.Index];
                if (typeof(TValue) != buffer.ValueType)
                    throw new InvalidOperationException($"Column '{column.Name}' holds {buffer.ValueType.Name}, not {typeof(TValue).Name}.");
                return (ValueGetter<TValue>)buffer.MakeGetter(CurrentSlot);
            }
            var index = column.Index - _parent._source.Schema.Count;
            return _parent.OutputGetter<TValue>(column, () => _outputs[index], CurrentSlot);
        }

        private int CurrentSlot()
        {
            if (_slot < 0) throw new InvalidOperationException("The cursor is not on a row: call MoveNext first.");
            return _slot;
        }

        public override bool MoveNext()
        {
            if (_slot + 1 < _batchCount)
            {
                _slot++;
                _position++;
                return true;
            }
            if (!FillBatch())
            {
                _slot = -1;
                return false;
            }
            _slot = 0;
            _position++;
            return true;
        }

        private bool FillBatch()
        {
            var mapper = _parent._mapper;
            _batchCount = 0;
            while (!_exhausted && _batchCount < mapper.BatchSize)
            {
                if (!_source.MoveNext())
                {
                    _exhausted = true;
                    break;
                }
                _inputs.ReadInto(_batchCount);
                foreach (var buffer in _passThrough.Values) buffer.Read(_batchCount);
                _idGetter(ref _ids[_batchCount]);
                _batchCount++;
            }
            if (_batchCount == 0) return false;
            mapper.Map(_inputs.Buffers, _batchCount, _outputs, _outputsActive);
            return true;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _source.Dispose();
            base.Dispose(disposing);
        }
    }
}
