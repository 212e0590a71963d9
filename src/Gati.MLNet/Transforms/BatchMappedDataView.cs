using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// A lazily evaluated view that appends a <see cref="BatchMapper"/>'s columns to its source and computes them
/// in batches. A cursor reads its source twice, in step: a look-ahead cursor over the mapper's inputs fills a
/// batch, the mapper runs once for the batch, and a pass-through cursor serves the source's own columns row by
/// row. Rows keep their source order, so this view does not shuffle.
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

    public bool CanShuffle => false;

    public DataViewSchema Schema => _mapper.OutputSchema;

    public long? GetRowCount() => _source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var inputCount = _source.Schema.Count;
        var active = new bool[Schema.Count];
        foreach (var column in columnsNeeded) active[column.Index] = true;
        var outputsActive = active.Skip(inputCount).ToArray();
        var sourceColumns = _source.Schema.Where(c => active[c.Index]).ToArray();
        var pass = _source.GetRowCursor(sourceColumns);
        if (!outputsActive.Any(a => a))
            return new Cursor(this, pass, null, active, outputsActive);
        DataViewRowCursor? look = null;
        try
        {
            look = _source.GetRowCursor(_mapper.InputColumns);
            return new Cursor(this, pass, look, active, outputsActive);
        }
        catch
        {
            pass.Dispose();
            look?.Dispose();
            throw;
        }
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly BatchMappedDataView _parent;
        private readonly DataViewRowCursor _pass;
        private readonly DataViewRowCursor? _look;
        private readonly bool[] _active;
        private readonly bool[] _outputsActive;
        private readonly BatchInputReader? _reader;
        private readonly Array?[] _outputs;
        private int _batchCount;
        private int _slot = -1;
        private bool _lookExhausted;

        public Cursor(BatchMappedDataView parent, DataViewRowCursor pass, DataViewRowCursor? look, bool[] active, bool[] outputsActive)
        {
            _parent = parent;
            _pass = pass;
            _look = look;
            _active = active;
            _outputsActive = outputsActive;
            var mapper = parent._mapper;
            _outputs = new Array?[mapper.Outputs.Count];
            if (look is not null)
            {
                _reader = new BatchInputReader(mapper, look, mapper.BatchSize);
                for (var j = 0; j < _outputs.Length; j++)
                    if (outputsActive[j]) _outputs[j] = mapper.Outputs[j].Allocate(mapper.BatchSize);
            }
        }

        public override DataViewSchema Schema => _parent.Schema;

        public override long Position => _pass.Position;

        public override long Batch => _pass.Batch;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _pass.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index]) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            var inputCount = _parent._source.Schema.Count;
            if (column.Index < inputCount) return _pass.GetGetter<TValue>(_pass.Schema[column.Index]);
            var output = _parent._mapper.Outputs[column.Index - inputCount];
            if (typeof(TValue) != output.ValueType)
                throw new InvalidOperationException($"Column '{column.Name}' holds {output.ValueType.Name}, not {typeof(TValue).Name}.");
            var index = column.Index - inputCount;
            return (ValueGetter<TValue>)output.MakeGetter(() => _outputs[index]!, CurrentSlot);
        }

        private int CurrentSlot()
        {
            if (_slot < 0) throw new InvalidOperationException("The cursor is not on a row: call MoveNext first.");
            return _slot;
        }

        public override bool MoveNext()
        {
            if (!_pass.MoveNext())
            {
                _slot = -1;
                return false;
            }
            if (_look is null) return true;
            _slot++;
            if (_slot >= _batchCount) FillBatch();
            return true;
        }

        private void FillBatch()
        {
            var mapper = _parent._mapper;
            _batchCount = 0;
            while (!_lookExhausted && _batchCount < mapper.BatchSize)
            {
                if (!_look!.MoveNext())
                {
                    _lookExhausted = true;
                    break;
                }
                _reader!.ReadInto(_batchCount++);
            }
            if (_batchCount == 0)
                throw new InvalidOperationException("The source data view returned fewer rows to a second cursor than to the first; it must return the same rows in the same order to every cursor.");
            mapper.Map(_reader!.Buffers, _batchCount, _outputs, _outputsActive);
            _slot = 0;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _pass.Dispose();
                _look?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
