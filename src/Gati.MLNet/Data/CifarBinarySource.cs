
namespace Gati.MLNet.Data;

/// <summary>
/// The CIFAR "binary version" files: fixed-size records of label byte(s) followed by 3x32x32 pixels
/// (1024 red, 1024 green, 1024 blue, each row-major). CIFAR-10: 1 label byte (3073-byte records);
/// CIFAR-100: coarse then fine label byte (3074-byte records). Several files (data_batch_1..5.bin) form one split.
/// </summary>
internal sealed class CifarBinarySource : ImageRecordSource
{
    private static readonly TensorShape CifarShape = new(3, 32, 32);
    private readonly string[] _files;
    private readonly long[] _recordsPerFile;
    private readonly int _labelBytes;
    private readonly int _labelIndex;

    /// <param name="name">Dataset and split, for messages.</param>
    /// <param name="files">The split's files in order.</param>
    /// <param name="labelBytes">Label bytes before the pixels of each record (1 or 2).</param>
    /// <param name="labelIndex">Which of the label bytes is the label to use.</param>
    /// <param name="classNames">Class names for that label.</param>
    public CifarBinarySource(string name, IReadOnlyList<string> files, int labelBytes, int labelIndex, IReadOnlyList<string> classNames)
    {
        Name = name;
        ClassNames = classNames;
        _labelBytes = labelBytes;
        _labelIndex = labelIndex;
        _files = files.ToArray();
        _recordsPerFile = new long[_files.Length];
        for (var i = 0; i < _files.Length; i++)
        {
            var info = new FileInfo(_files[i]);
            if (!info.Exists) throw new FileNotFoundException($"{name}: file not found: {_files[i]}", _files[i]);
            if (info.Length == 0 || info.Length % RecordLength != 0)
                throw new DatasetFormatException(_files[i],
                    $"{info.Length} bytes is not a whole number of {RecordLength}-byte records ({labelBytes} label byte(s) + 3x32x32 pixels): " +
                    "the file is truncated or not in the CIFAR binary format");
            _recordsPerFile[i] = info.Length / RecordLength;
        }
    }

    private int RecordLength => _labelBytes + CifarShape.Size;

    public override string Name { get; }

    public override TensorShape Shape => CifarShape;

    public override IReadOnlyList<string> ClassNames { get; }

    public override long RowCount => _recordsPerFile.Sum();

    public override bool SupportsRandomAccess => true;

    public override ImageRecordReader Open(bool readImages) => new Reader(this, readImages);

    private sealed class Reader : ImageRecordReader
    {
        private readonly CifarBinarySource _source;
        private readonly bool _readImages;
        private readonly byte[] _record;
        private FileStream? _stream;
        private int _file = -1;
        private long _rowInFile;

        public Reader(CifarBinarySource source, bool readImages)
        {
            _source = source;
            _readImages = readImages;
            _record = new byte[source.RecordLength];
            OpenFile(0, 0);
        }

        public override void ReadNext(Span<byte> pixels, out int label)
        {
            while (_rowInFile >= _source._recordsPerFile[_file])
            {
                if (_file + 1 >= _source._files.Length) throw new InvalidOperationException("Read past the last record.");
                OpenFile(_file + 1, 0);
            }
            var path = _source._files[_file];
            ReadExactly(_stream!, _record, path, $"record {_rowInFile}");
            label = _record[_source._labelIndex];
            if (label >= _source.ClassNames.Count)
                throw new DatasetFormatException(path,
                    $"record {_rowInFile} has label {label}, but {_source.Name} has {_source.ClassNames.Count} classes (0..{_source.ClassNames.Count - 1})");
            if (_readImages) _record.AsSpan(_source._labelBytes).CopyTo(pixels);
            _rowInFile++;
        }

        public override void Seek(long row)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(row);
            for (var f = 0; f < _source._files.Length; f++)
            {
                if (row < _source._recordsPerFile[f])
                {
                    OpenFile(f, row);
                    return;
                }
                row -= _source._recordsPerFile[f];
            }
            throw new ArgumentOutOfRangeException(nameof(row), "Row is past the end of the dataset.");
        }

        private void OpenFile(int file, long row)
        {
            if (file != _file)
            {
                _stream?.Dispose();
                _stream = new FileStream(_source._files[file], FileMode.Open, FileAccess.Read, FileShare.Read, 4096); // small: shuffled reads seek per record
                _file = file;
            }
            _stream!.Position = row * _source.RecordLength;
            _rowInFile = row;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _stream?.Dispose();
        }
    }
}
