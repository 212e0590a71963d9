using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Data;

/// <summary>Schema checks shared by the trainers, with messages that say how to fix the data.</summary>
internal static class TrainingColumns
{
    public static DataViewSchema.Column RequireImage(DataViewSchema schema, string name, int? expectedSize = null)
    {
        var column = schema.GetColumnOrNull(name)
            ?? throw new ArgumentException($"Image column '{name}' not found (columns: {string.Join(", ", schema.Select(c => c.Name))}).");
        if (column.Type is not VectorDataViewType vector || vector.ItemType != NumberDataViewType.Single || !vector.IsKnownSize)
            throw new ArgumentException($"Image column '{name}' must be a known-size Vector<Single> of C*H*W values, but is {column.Type}.");
        if (expectedSize is not null && vector.Size != expectedSize)
            throw new ArgumentException($"Image column '{name}' has {vector.Size} values per row, expected {expectedSize}.");
        return column;
    }

    /// <summary>The [C, H, W] of an image column: from its vector dimensions, or from <paramref name="declared"/>.</summary>
    public static TensorShape ImageShape(DataViewSchema.Column column, TensorShape? declared)
    {
        var vector = (VectorDataViewType)column.Type;
        if (declared is { } shape)
        {
            if (shape.Size != vector.Size)
                throw new ArgumentException($"Declared image shape {shape} has {shape.Size} values but column '{column.Name}' has {vector.Size}.");
            return shape;
        }
        var dims = vector.Dimensions;
        if (dims.Length == 3) return new TensorShape(dims[0], dims[1], dims[2]);
        if (dims.Length == 2) return new TensorShape(1, dims[0], dims[1]);
        throw new ArgumentException(
            $"Image column '{column.Name}' is a flat vector of {vector.Size} values; set the trainer's ImageShape (channels, height, width) " +
            "or produce the column with ExtractPixels / a Gati dataset loader, which record the [C, H, W] dimensions.");
    }

    public static DataViewSchema.Column RequireKeyLabel(DataViewSchema schema, string name, out int classCount)
    {
        var column = schema.GetColumnOrNull(name)
            ?? throw new ArgumentException($"Label column '{name}' not found (columns: {string.Join(", ", schema.Select(c => c.Name))}).");
        if (column.Type is not KeyDataViewType key || key.RawType != typeof(uint))
            throw new ArgumentException(
                $"Label column '{name}' must be a Key<UInt32> with a known class count, but is {column.Type}. " +
                "Use mlContext.Transforms.Conversion.MapValueToKey to turn labels into keys.");
        if (key.Count < 2 || key.Count > int.MaxValue)
            throw new ArgumentException($"Label column '{name}' has {key.Count} classes; a classifier needs at least 2.");
        classCount = (int)key.Count;
        return column;
    }
}
