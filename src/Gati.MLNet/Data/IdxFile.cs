using System.Buffers.Binary;
using System.IO.Compression;

namespace Gati.MLNet.Data;

/// <summary>
/// The IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed): a big-endian header
/// (0x00 0x00, type code 0x08 = unsigned byte, dimension count, then each dimension as int32) followed by the
/// data in row-major order.
/// </summary>
internal sealed class IdxFile
{
    private const byte UnsignedByteType = 0x08;

    private IdxFile(string path, bool compressed, int[] dimensions, long headerLength)
    {
        Path = path;
        Compressed = compressed;
        Dimensions = dimensions;
        HeaderLength = headerLength;
    }

    public string Path { get; }

    public bool Compressed { get; }

    public IReadOnlyList<int> Dimensions { get; }

    public long HeaderLength { get; }

    public long ItemCount => Dimensions[0];

    /// <summary>Bytes per item (product of all but the first dimension).</summary>
    public int ItemLength => Dimensions.Skip(1).Aggregate(1, (a, b) => checked(a * b));

    public long DataLength => checked(ItemCount * ItemLength);

    /// <summary>Reads and validates the header; checks the file's length against it.</summary>
    public static IdxFile Open(string path, int expectedDimensionCount)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"IDX file not found: {path}", path);
        using var file = File.OpenRead(path);
        var compressed = IsGzip(file);
        using var stream = compressed ? new GZipStream(file, CompressionMode.Decompress, leaveOpen: true) : (Stream)file;

        Span<byte> magic = stackalloc byte[4];
        ReadHeader(stream, magic, path);
        if (magic[0] != 0 || magic[1] != 0)
            throw new DatasetFormatException(path, $"not an IDX file (magic bytes {magic[0]:X2} {magic[1]:X2}, expected 00 00)");
        if (magic[2] != UnsignedByteType)
            throw new DatasetFormatException(path, $"IDX element type 0x{magic[2]:X2} is not supported (expected 0x08, unsigned byte)");
        if (magic[3] != expectedDimensionCount)
            throw new DatasetFormatException(path, $"IDX file has {magic[3]} dimension(s), expected {expectedDimensionCount}");

        var dimensions = new int[expectedDimensionCount];
        Span<byte> dim = stackalloc byte[4];
        for (var i = 0; i < dimensions.Length; i++)
        {
            ReadHeader(stream, dim, path);
            dimensions[i] = BinaryPrimitives.ReadInt32BigEndian(dim);
            if (dimensions[i] <= 0)
                throw new DatasetFormatException(path, $"IDX dimension {i} is {dimensions[i]} (must be positive)");
        }

        var idx = new IdxFile(path, compressed, dimensions, 4 + 4L * expectedDimensionCount);
        var expectedLength = idx.HeaderLength + idx.DataLength;
        if (compressed)
        {
            // The gzip trailer's ISIZE is the uncompressed length mod 2^32: a cheap check for truncation before
            // any record is read (a truncated file's last four bytes are compressed data, not the trailer).
            var isize = ReadGzipTrailerLength(file);
            if (isize != (uint)(expectedLength & 0xFFFFFFFF))
                throw new DatasetFormatException(path,
                    $"gzip stream length does not match the IDX header ({string.Join("x", dimensions)} needs {expectedLength} bytes " +
                    $"uncompressed, the gzip trailer says {isize}): the file is truncated or corrupt");
        }
        else if (file.Length != expectedLength)
        {
            throw new DatasetFormatException(path,
                $"file is {file.Length} bytes but its IDX header ({string.Join("x", dimensions)}) needs {expectedLength}: " +
                (file.Length < expectedLength ? "truncated" : "trailing data"));
        }
        return idx;
    }

    /// <summary>Opens the data for sequential reading, positioned at the first item.</summary>
    public Stream OpenData()
    {
        // Uncompressed files may be read in random order: a small buffer keeps each seek cheap.
        var file = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read, Compressed ? 1 << 16 : 4096);
        try
        {
            Stream stream = Compressed ? new BufferedStream(new GZipStream(file, CompressionMode.Decompress), 1 << 16) : file;
            Span<byte> skip = stackalloc byte[(int)HeaderLength];
            stream.ReadExactly(skip);
            return stream;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static bool IsGzip(FileStream file)
    {
        Span<byte> head = stackalloc byte[2];
        var n = file.Read(head);
        file.Position = 0;
        return n == 2 && head[0] == 0x1f && head[1] == 0x8b;
    }

    private static uint ReadGzipTrailerLength(FileStream file)
    {
        if (file.Length < 18) return uint.MaxValue;
        Span<byte> trailer = stackalloc byte[4];
        file.Position = file.Length - 4;
        file.ReadExactly(trailer);
        return BinaryPrimitives.ReadUInt32LittleEndian(trailer);
    }

    private static void ReadHeader(Stream stream, Span<byte> buffer, string path)
    {
        try
        {
            stream.ReadExactly(buffer);
        }
        catch (EndOfStreamException ex)
        {
            throw new DatasetFormatException(path, "file ends inside the IDX header (truncated or empty)", ex);
        }
        catch (InvalidDataException ex)
        {
            throw new DatasetFormatException(path, $"corrupt gzip data in the IDX header: {ex.Message}", ex);
        }
    }
}
