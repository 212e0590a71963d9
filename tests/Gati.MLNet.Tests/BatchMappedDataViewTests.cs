using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

public sealed class BatchMappedDataViewTests
{
    private readonly MLContext _ml = new(seed: 1);

    /// <summary>Outputs the sum of each row's vector; counts how often it is called.</summary>
    private sealed class SumMapper : BatchMapper
    {
        public SumMapper(DataViewSchema schema, int batchSize) : base(schema, ["Values"], batchSize) =>
            Outputs = [OutputColumn.Single("Sum"), OutputColumn.Vector("Doubled", InputSizes[0])];

        public int Calls { get; private set; }

        public List<int> BatchSizes { get; } = [];

        public override IReadOnlyList<OutputColumn> Outputs { get; }

        public override void Map(float[][] inputs, int count, Array?[] outputs, bool[] active)
        {
            Calls++;
            BatchSizes.Add(count);
            var size = InputSizes[0];
            for (var row = 0; row < count; row++)
            {
                var values = inputs[0].AsSpan(row * size, size);
                if (outputs[0] is float[] sums) sums[row] = values.ToArray().Sum();
                if (outputs[1] is float[] doubled)
                    for (var i = 0; i < size; i++) doubled[row * size + i] = 2 * values[i];
            }
        }
    }

    private IDataView Rows(int count, float poison = 1f) => _ml.Data.LoadFromEnumerable(Enumerable.Range(0, count).Select(i => new Row
    {
        Id = i,
        Values = [i, i == 7 ? poison : 1f, 2f],
    }));

    [Fact]
    public void Cursor_300Rows_Batch64_MapsFiveBatchesAndKeepsRowsAligned()
    {
        var data = Rows(300);
        var mapper = new SumMapper(data.Schema, 64);
        var view = new BatchMappedDataView(data, mapper);
        var ids = view.GetColumn<int>("Id").ToArray();
        var sums = new BatchMappedDataView(data, mapper).GetColumn<float>("Sum").ToArray();
        Assert.Equal(Enumerable.Range(0, 300), ids);
        Assert.Equal(Enumerable.Range(0, 300).Select(i => i + 3f), sums);
        Assert.Equal(5, mapper.Calls);
        Assert.Equal([64, 64, 64, 64, 44], mapper.BatchSizes);
    }

    [Fact]
    public void Cursor_OnlyPassThroughColumns_NeverRunsTheMapper()
    {
        var data = Rows(50);
        var mapper = new SumMapper(data.Schema, 16);
        Assert.Equal(50, new BatchMappedDataView(data, mapper).GetColumn<int>("Id").Count());
        Assert.Equal(0, mapper.Calls);
    }

    [Fact]
    public void RowToRowMapper_PredictionEnginePath_MapsOneRowPerCall()
    {
        var data = Rows(3);
        var mapper = new SumMapper(data.Schema, 64);
        var rowMapper = new BatchRowToRowMapper(mapper);
        Assert.Equal(["Values"], rowMapper.GetDependencies([rowMapper.OutputSchema["Sum"]]).Select(c => c.Name));
        using var cursor = data.GetRowCursor(data.Schema);
        var row = rowMapper.GetRow(cursor, rowMapper.OutputSchema);
        var sum = row.GetGetter<float>(row.Schema["Sum"]);
        var doubled = row.GetGetter<VBuffer<float>>(row.Schema["Doubled"]);
        float value = 0;
        VBuffer<float> vector = default;
        while (cursor.MoveNext())
        {
            sum(ref value);
            doubled(ref vector);
            Assert.Equal(cursor.Position + 3f, value);
            Assert.Equal(2f * cursor.Position, vector.GetValues()[0]);
        }
        Assert.Equal(3, mapper.Calls);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void Cursor_NonFiniteInput_FailsNamingRowColumnAndIndex(float poison)
    {
        var data = Rows(20, poison);
        var view = new BatchMappedDataView(data, new SumMapper(data.Schema, 8));
        var error = Assert.Throws<InvalidDataException>(() => view.GetColumn<float>("Sum").ToArray());
        Assert.Contains("Row 7", error.Message);
        Assert.Contains("'Values'", error.Message);
        Assert.Contains("index 1", error.Message);
    }

    [Fact]
    public void Mapper_InputColumnMissingOrNotAVector_IsRejectedAtBinding()
    {
        var data = _ml.Data.LoadFromEnumerable(new[] { new Scalar() });
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new SumMapper(data.Schema, 4));
        Assert.Contains("known-size vector of Single", error.Message);
    }

    private sealed class Row
    {
        public int Id { get; set; }

        [VectorType(3)]
        public float[] Values { get; set; } = [];
    }

    private sealed class Scalar
    {
        public float Values { get; set; }
    }
}
