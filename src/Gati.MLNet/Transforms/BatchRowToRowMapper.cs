using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// <see cref="IRowToRowMapper"/> over a <see cref="BatchMapper"/> for one row at a time: the path ML.NET's
/// PredictionEngine takes. Outputs are computed once per input position and cached.
/// </summary>
internal sealed class BatchRowToRowMapper : IRowToRowMapper
{
    private readonly BatchMapper _mapper;

    public BatchRowToRowMapper(BatchMapper mapper) => _mapper = mapper;

    public DataViewSchema InputSchema => _mapper.InputSchema;

    public DataViewSchema OutputSchema => _mapper.OutputSchema;

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var inputCount = InputSchema.Count;
        var columns = dependingColumns.ToArray();
        var needed = columns.Where(c => c.Index < inputCount).Select(c => InputSchema[c.Index]).ToList();
        if (columns.Any(c => c.Index >= inputCount))
            needed.AddRange(_mapper.InputColumns.Where(c => needed.All(n => n.Index != c.Index)));
        return needed;
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        var active = new bool[OutputSchema.Count];
        foreach (var column in activeColumns) active[column.Index] = true;
        return new Row(this, input, active);
    }

    private sealed class Row : DataViewRow
    {
        private readonly BatchRowToRowMapper _parent;
        private readonly DataViewRow _input;
        private readonly bool[] _active;
        private readonly bool[] _outputsActive;
        private readonly Array?[] _outputs;
        private BatchInputReader? _reader;
        private long _cachedPosition = -1;

        public Row(BatchRowToRowMapper parent, DataViewRow input, bool[] active)
        {
            _parent = parent;
            _input = input;
            _active = active;
            var mapper = parent._mapper;
            _outputsActive = active.Skip(parent.InputSchema.Count).ToArray();
            _outputs = new Array?[mapper.Outputs.Count];
            for (var j = 0; j < _outputs.Length; j++)
                if (_outputsActive[j]) _outputs[j] = mapper.Outputs[j].Allocate(1);
        }

        public override DataViewSchema Schema => _parent.OutputSchema;

        public override long Position => _input.Position;

        public override long Batch => _input.Batch;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index]) throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            var inputCount = _parent.InputSchema.Count;
            if (column.Index < inputCount) return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            var index = column.Index - inputCount;
            var output = _parent._mapper.Outputs[index];
            if (typeof(TValue) != output.ValueType)
                throw new InvalidOperationException($"Column '{column.Name}' holds {output.ValueType.Name}, not {typeof(TValue).Name}.");
            return (ValueGetter<TValue>)output.MakeGetter(() => Ensure(index), () => 0);
        }

        private Array Ensure(int index)
        {
            if (_cachedPosition != _input.Position || _input.Position < 0)
            {
                _reader ??= new BatchInputReader(_parent._mapper, _input, 1);
                _reader.ReadInto(0);
                _parent._mapper.Map(_reader.Buffers, 1, _outputs, _outputsActive);
                _cachedPosition = _input.Position;
            }
            return _outputs[index]!;
        }
    }
}
