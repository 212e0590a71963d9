using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.IO.Compression;

namespace Gati.MLNet.Data;

/// <summary>
/// The IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed, in one or more gzip members): a big-endian
/// header (0x00 0x00, type code 0x08 = unsigned byte, dimension count, then each dimension as int32) followed by the
/// data in row-major order.
/// </summary>
internal sealed class IdxFile
{
    private const byte UnsignedByteType = 0x08;

    /// <summary>Deflate's densest code spends 2 bits on a 258-byte match: no gzip file expands more than this.</summary>
    private const long MaxDeflateRatio = 1032;

    // Gzip files verified in this process (their uncompressed length), so that repeated loads of a split do not
    // decompress it again. Keyed by length and write time as well: a replaced file is verified afresh.
    private static readonly ConcurrentDictionary<(string Path, long Length, DateTime Written), long> VerifiedGzip = new();

    private IdxFile(string path, bool compressed, int[] dimensions, long headerLength, int itemLength)
    {
        Path = path;
        Compressed = compressed;
        Dimensions = dimensions;
        HeaderLength = headerLength;
        ItemLength = itemLength;
    }

    public string Path { get; }

    public bool Compressed { get; }

    public IReadOnlyList<int> Dimensions { get; }

    public long HeaderLength { get; }

    public long ItemCount => Dimensions[0];

    /// <summary>Bytes per item (product of all but the first dimension).</summary>
    public int ItemLength { get; }

    public long DataLength => ItemCount * ItemLength;

    /// <summary>
    /// Reads and validates the header, then checks it against the data really present (the file's length, or for gzip
    /// the decompressed length, counted through a fixed buffer): nothing is sized from the header before that.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="expectedDimensionCount">3 for images (N x H x W), 1 for labels.</param>
    /// <param name="expectedItemDimensions">When given, every item must have these dimensions (e.g. 28, 28).</param>
    /// <param name="datasetName">The dataset, for messages about <paramref name="expectedItemDimensions"/>.</param>
    public static IdxFile Open(string path, int expectedDimensionCount, IReadOnlyList<int>? expectedItemDimensions = null, string? datasetName = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"IDX file not found: {path}", path);
        using var file = File.OpenRead(path);
        var compressed = IsGzip(file);
        var dimensions = ReadHeader(file, compressed, path, expectedDimensionCount);
        var shape = string.Join("x", dimensions);

        if (expectedItemDimensions is not null && !dimensions.Skip(1).SequenceEqual(expectedItemDimensions))
            throw new DatasetFormatException(path,
                $"items are {string.Join("x", dimensions.Skip(1))} (IDX header {shape}), but {datasetName ?? "this dataset"} has {string.Join("x", expectedItemDimensions)} items");

        // Int128 holds any product of three int32 dimensions, so a hostile header cannot overflow here.
        var itemLength = dimensions.Skip(1).Aggregate((Int128)1, (a, d) => a * d);
        if (itemLength > Array.MaxLength)
            throw new DatasetFormatException(path, $"IDX header {shape} describes items of {itemLength} bytes each, more than one item can hold: the header is corrupt");
        var headerLength = 4 + 4L * expectedDimensionCount;
        var expected = headerLength + dimensions[0] * itemLength;

        if (!compressed)
        {
            if (file.Length != expected)
                throw new DatasetFormatException(path,
                    $"file is {file.Length} bytes but its IDX header ({shape}) needs {expected}: " + (file.Length < expected ? "truncated" : "trailing data"));
        }
        else
        {
            if (expected > (Int128)file.Length * MaxDeflateRatio)
                throw new DatasetFormatException(path,
                    $"IDX header ({shape}) needs {expected} bytes, but {file.Length} bytes of gzip cannot hold more than {file.Length * MaxDeflateRatio}: truncated, or the header is corrupt");
            var actual = VerifiedGzipLength(file, path, (long)expected);
            if (actual < expected)
                throw new DatasetFormatException(path, $"decompresses to {actual} bytes but its IDX header ({shape}) needs {expected}: truncated");
            if (actual > expected)
                throw new DatasetFormatException(path, $"decompresses to more than the {expected} bytes its IDX header ({shape}) needs: trailing data");
        }
        return new IdxFile(path, compressed, dimensions, headerLength, (int)itemLength);
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
            ReadExactly(stream, skip, Path, "the IDX header");
            return stream;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static int[] ReadHeader(FileStream file, bool compressed, string path, int expectedDimensionCount)
    {
        using var gzip = compressed ? new GZipStream(file, CompressionMode.Decompress, leaveOpen: true) : null;
        var stream = gzip ?? (Stream)file;
        Span<byte> magic = stackalloc byte[4];
        ReadExactly(stream, magic, path, "the IDX header");
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
            ReadExactly(stream, dim, path, "the IDX header");
            dimensions[i] = BinaryPrimitives.ReadInt32BigEndian(dim);
            if (dimensions[i] <= 0)
                throw new DatasetFormatException(path, $"IDX dimension {i} is {dimensions[i]} (must be positive)");
        }
        return dimensions;
    }

    /// <summary>
    /// The decompressed length of every gzip member, counted up to <paramref name="limit"/> + 1 bytes: bounded time and
    /// memory whatever the header says, and corrupt data (bad deflate codes, CRC or length mismatch) is found here.
    /// </summary>
    private static long VerifiedGzipLength(FileStream file, string path, long limit)
    {
        var key = (System.IO.Path.GetFullPath(path), file.Length, File.GetLastWriteTimeUtc(path));
        if (VerifiedGzip.TryGetValue(key, out var known)) return known;
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 16);
        long total = 0;
        try
        {
            file.Position = 0;
            using var gzip = new GZipStream(file, CompressionMode.Decompress, leaveOpen: true);
            int n;
            while (total <= limit && (n = gzip.Read(buffer, 0, (int)Math.Min(buffer.Length, limit + 1 - total))) > 0) total += n;
        }
        catch (InvalidDataException ex)
        {
            throw new DatasetFormatException(path, $"corrupt gzip data after {total} decompressed bytes: {ex.Message}", ex);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (total == limit) VerifiedGzip[key] = total;
        return total;
    }

    private static bool IsGzip(FileStream file)
    {
        Span<byte> head = stackalloc byte[2];
        var n = file.Read(head);
        file.Position = 0;
        return n == 2 && head[0] == 0x1f && head[1] == 0x8b;
    }

    private static void ReadExactly(Stream stream, Span<byte> buffer, string path, string what)
    {
        try
        {
            stream.ReadExactly(buffer);
        }
        catch (EndOfStreamException ex)
        {
            throw new DatasetFormatException(path, $"file ends inside {what} (truncated or empty)", ex);
        }
        catch (InvalidDataException ex)
        {
            throw new DatasetFormatException(path, $"corrupt gzip data in {what}: {ex.Message}", ex);
        }
    }
}
