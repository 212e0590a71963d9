using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Training;

/// <summary>
/// Reads (image vector, key label) pairs from an <see cref="IDataView"/> in batches, optionally shuffled: through
/// the view's own random-order cursor when it can shuffle, otherwise through a bounded shuffle pool over a
/// sequential cursor. Never holds more than the pool and one batch in memory.
/// </summary>
internal sealed class LabeledImageBatches
{
    private readonly IDataView _data;
    private readonly DataViewSchema.Column _image;
    private readonly DataViewSchema.Column _label;
    private readonly int _shufflePoolSize;

    public LabeledImageBatches(IDataView data, string imageColumn, string labelColumn, int imageSize, int classCount, int shufflePoolSize)
    {
        _data = data;
        _image = TrainingColumns.RequireImage(data.Schema, imageColumn, imageSize);
        _label = TrainingColumns.RequireKeyLabel(data.Schema, labelColumn, out var labelCount);
        if (labelCount != classCount)
            throw new ArgumentException($"Label column '{labelColumn}' has {labelCount} classes but the model has {classCount}.");
        ImageSize = imageSize;
        _shufflePoolSize = Math.Max(1, shufflePoolSize);
    }

    public int ImageSize { get; }

    public long? RowCount => _data.GetRowCount();

    /// <summary>
    /// Enumerates batches. Each yielded value is the number of rows written to <paramref name="images"/>
    /// (count x ImageSize) and <paramref name="labels"/> (0-based class indices).
    /// </summary>
    public IEnumerable<int> Read(int batchSize, float[] images, long[] labels, Random? shuffle)
    {
        using var cursor = _data.GetRowCursor([_image, _label], shuffle is not null && _data.CanShuffle ? shuffle : null);
        var getImage = cursor.GetGetter<VBuffer<float>>(_image);
        var getLabel = cursor.GetGetter<uint>(_label);
        VBuffer<float> image = default;
        uint key = 0;

        bool Next(Span<float> target, out long label)
        {
            if (!cursor.MoveNext())
            {
                label = 0;
                return false;
            }
            getImage(ref image);
            getLabel(ref key);
            if (image.Length != ImageSize)
                throw new InvalidDataException($"Row {cursor.Position}: column '{_image.Name}' has {image.Length} values, expected {ImageSize}.");
            if (key == 0)
                throw new InvalidDataException($"Row {cursor.Position}: column '{_label.Name}' is missing (key 0): every training row needs a known label.");
            image.CopyTo(target);
            for (var i = 0; i < target.Length; i++)
                if (!float.IsFinite(target[i]))
                    throw new InvalidDataException($"Row {cursor.Position}: column '{_image.Name}' holds {target[i]} at index {i}; images must be finite.");
            label = key - 1;
            return true;
        }

        if (shuffle is null || _data.CanShuffle)
        {
            var count = 0;
            while (Next(images.AsSpan(count * ImageSize, ImageSize), out labels[count]))
            {
                if (++count == batchSize)
                {
                    yield return count;
                    count = 0;
                }
            }
            if (count > 0) yield return count;
            yield break;
        }

        // Shuffle pool: keep up to _shufflePoolSize rows; each incoming row replaces a random pooled row, which is emitted.
        var pool = new float[checked((long)_shufflePoolSize * ImageSize)];
        var poolLabels = new long[_shufflePoolSize];
        var filled = 0;
        while (filled < _shufflePoolSize && Next(pool.AsSpan(filled * ImageSize, ImageSize), out poolLabels[filled])) filled++;
        var batch = 0;
        var incoming = new float[ImageSize];
        while (filled > 0)
        {
            var pick = shuffle.Next(filled);
            pool.AsSpan(pick * ImageSize, ImageSize).CopyTo(images.AsSpan(batch * ImageSize, ImageSize));
            labels[batch] = poolLabels[pick];
            if (Next(incoming, out var incomingLabel))
            {
                incoming.CopyTo(pool.AsSpan(pick * ImageSize, ImageSize));
                poolLabels[pick] = incomingLabel;
            }
            else
            {
                // Source exhausted: move the last pooled row into the hole.
                filled--;
                pool.AsSpan(filled * ImageSize, ImageSize).CopyTo(pool.AsSpan(pick * ImageSize, ImageSize));
                poolLabels[pick] = poolLabels[filled];
            }
            if (++batch == batchSize)
            {
                yield return batch;
                batch = 0;
            }
        }
        if (batch > 0) yield return batch;
    }
}
