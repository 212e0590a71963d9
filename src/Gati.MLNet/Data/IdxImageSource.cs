
namespace Gati.MLNet.Data;

/// <summary>An images IDX file (N x H x W) with its labels IDX file (N), e.g. Fashion-MNIST.</summary>
internal sealed class IdxImageSource : ImageRecordSource
{
    private readonly IdxFile _images;
    private readonly IdxFile _labels;

    /// <param name="name">Dataset and split, for messages.</param>
    /// <param name="imagesPath">The N x H x W images file.</param>
    /// <param name="labelsPath">The N labels file.</param>
    /// <param name="classNames">Class names; labels index them.</param>
    /// <param name="imageSize">When given, the (height, width) every image must have.</param>
    public IdxImageSource(string name, string imagesPath, string labelsPath, IReadOnlyList<string> classNames, (int Height, int Width)? imageSize = null)
    {
        Name = name;
        ClassNames = classNames;
        _images = IdxFile.Open(imagesPath, expectedDimensionCount: 3,
            imageSize is { } size ? [size.Height, size.Width] : null, name);
        _labels = IdxFile.Open(labelsPath, expectedDimensionCount: 1);
        if (_images.ItemCount != _labels.ItemCount)
            throw new DatasetFormatException(labelsPath,
                $"holds {_labels.ItemCount} labels but {imagesPath} holds {_images.ItemCount} images: the files do not belong together");
        Shape = new TensorShape(1, _images.Dimensions[1], _images.Dimensions[2]);
    }

    public override string Name { get; }

    public override TensorShape Shape { get; }

    public override IReadOnlyList<string> ClassNames { get; }

    public override long RowCount => _images.ItemCount;

    public override bool SupportsRandomAccess => !_images.Compressed && !_labels.Compressed;

    public override ImageRecordReader Open(bool readImages) => new Reader(this, readImages);

    private sealed class Reader : ImageRecordReader
    {
        private readonly IdxImageSource _source;
        private readonly Stream? _images;
        private readonly Stream _labels;
        private long _row;

        public Reader(IdxImageSource source, bool readImages)
        {
            _source = source;
            _labels = source._labels.OpenData();
            if (readImages)
            {
                try
                {
                    _images = source._images.OpenData();
                }
                catch
                {
                    _labels.Dispose();
                    throw;
                }
            }
        }

        public override void ReadNext(Span<byte> pixels, out int label)
        {
            if (_row >= _source.RowCount)
                throw new InvalidOperationException("Read past the last record.");
            Span<byte> labelByte = stackalloc byte[1];
            ReadExactly(_labels, labelByte, _source._labels.Path, $"label {_row}");
            label = labelByte[0];
            if (label >= _source.ClassNames.Count)
                throw new DatasetFormatException(_source._labels.Path,
                    $"label {_row} is {label}, but {_source.Name} has {_source.ClassNames.Count} classes (0..{_source.ClassNames.Count - 1})");
            if (_images is not null)
                ReadExactly(_images, pixels[.._source.Shape.Size], _source._images.Path, $"image {_row}");
            _row++;
        }

        public override void Seek(long row)
        {
            if (!_source.SupportsRandomAccess) throw new NotSupportedException("Compressed IDX files are read sequentially.");
            ArgumentOutOfRangeException.ThrowIfNegative(row);
            _labels.Position = _source._labels.HeaderLength + row;
            if (_images is not null) _images.Position = _source._images.HeaderLength + row * _source._images.ItemLength;
            _row = row;
        }

        protected override void Dispose(bool disposing)
        {
            if (!disposing) return;
            _images?.Dispose();
            _labels.Dispose();
        }
    }
}
