namespace Gati.MLNet.Training;

/// <summary>
/// The reference's training augmentation on a batch of normalised [C, H, W] images in managed memory: a random
/// crop of the original size from the image padded by <c>padding</c> pixels on each side, and a random horizontal
/// flip. Padding pixels are 0 in normalised units, i.e. the dataset's mean colour.
/// </summary>
internal sealed class ImageAugmentation
{
    private readonly int _channels;
    private readonly int _height;
    private readonly int _width;
    private readonly int _padding;
    private readonly bool _flip;

    public ImageAugmentation(int channels, int height, int width, int padding, bool flip)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(padding);
        _channels = channels;
        _height = height;
        _width = width;
        _padding = padding;
        _flip = flip;
    }

    public bool IsIdentity => _padding == 0 && !_flip;

    /// <summary>Writes augmented copies of the first <paramref name="count"/> images of <paramref name="source"/> to <paramref name="target"/>.</summary>
    public void Apply(ReadOnlySpan<float> source, Span<float> target, int count, Random random)
    {
        var size = _channels * _height * _width;
        for (var n = 0; n < count; n++)
        {
            // Draw in a fixed order so that runs with the same seed see the same augmentations.
            var dy = _padding == 0 ? 0 : random.Next(2 * _padding + 1) - _padding;
            var dx = _padding == 0 ? 0 : random.Next(2 * _padding + 1) - _padding;
            var flip = _flip && random.Next(2) == 1;
            var src = source.Slice(n * size, size);
            var dst = target.Slice(n * size, size);
            for (var c = 0; c < _channels; c++)
            {
                var plane = c * _height * _width;
                for (var y = 0; y < _height; y++)
                {
                    var sy = y + dy;
                    var row = dst.Slice(plane + y * _width, _width);
                    if (sy < 0 || sy >= _height)
                    {
                        row.Clear();
                        continue;
                    }
                    var srcRow = src.Slice(plane + sy * _width, _width);
                    for (var x = 0; x < _width; x++)
                    {
                        var sx = (flip ? _width - 1 - x : x) + dx;
                        row[x] = sx < 0 || sx >= _width ? 0f : srcRow[sx];
                    }
                }
            }
        }
    }
}
