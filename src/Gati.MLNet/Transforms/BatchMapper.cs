using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Transforms;

/// <summary>
/// Computes new columns for a batch of rows from one or more Vector&lt;Single&gt; input columns of known size.
/// A mapper is bound to one input schema; it is shared by the cursors of a data view, so
/// <see cref="Map"/> must be safe to call from several threads (implementations serialise where they must).
/// </summary>
internal abstract class BatchMapper
{
    private DataViewSchema? _outputSchema;

    protected BatchMapper(DataViewSchema inputSchema, IReadOnlyList<string> inputColumnNames, int batchSize)
    {
        InputSchema = inputSchema;
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be at least 1.");
        BatchSize = batchSize;
        var inputs = new DataViewSchema.Column[inputColumnNames.Count];
        var sizes = new int[inputColumnNames.Count];
        for (var i = 0; i < inputs.Length; i++)
        {
            var name = inputColumnNames[i];
            var column = inputSchema.GetColumnOrNull(name)
                ?? throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Input column '{name}' not found in the data (columns: {string.Join(", ", inputSchema.Select(c => c.Name))}).");
            if (column.Type is not VectorDataViewType { ItemType: NumberDataViewType } vector || vector.ItemType != NumberDataViewType.Single || !vector.IsKnownSize)
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Input column '{name}' must be a known-size vector of Single, but is {column.Type}.");
            inputs[i] = column;
            sizes[i] = vector.Size;
        }
        InputColumns = inputs;
        InputSizes = sizes;
    }

    public DataViewSchema InputSchema { get; }

    public IReadOnlyList<DataViewSchema.Column> InputColumns { get; }

    public IReadOnlyList<int> InputSizes { get; }

    public int BatchSize { get; }

    public abstract IReadOnlyList<OutputColumn> Outputs { get; }

    /// <summary>The input schema with the output columns appended (an output hides an input of the same name).</summary>
    public DataViewSchema OutputSchema => _outputSchema ??= BuildOutputSchema();

    /// <summary>Checks the size of an input column against what the model expects.</summary>
    protected void CheckInputSize(int input, int expected, string what)
    {
        if (InputSizes[input] != expected)
            throw new ArgumentException(
                $"Input column '{InputColumns[input].Name}' has {InputSizes[input]} values per row, but {what} expects {expected}.");
    }

    /// <summary>
    /// Fills the outputs of <paramref name="count"/> rows. <paramref name="inputs"/>[i] holds count x InputSizes[i]
    /// floats; <paramref name="outputs"/>[j] is storage from <see cref="OutputColumn.Allocate"/> (null where
    /// <paramref name="active"/>[j] is false).
    /// </summary>
    public abstract void Map(float[][] inputs, int count, Array?[] outputs, bool[] active);

    private DataViewSchema BuildOutputSchema()
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(InputSchema);
        foreach (var output in Outputs) builder.AddColumn(output.Name, output.Type, output.Annotations);
        return builder.ToSchema();
    }
}
