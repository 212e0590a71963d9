
namespace Gati.MLNet.Data;

/// <summary>
/// A labelled image dataset stored as fixed-size records of byte pixels ([C, H, W] order) on disk. Sources
/// stream records; they never hold a whole dataset in memory.
/// </summary>
internal abstract class ImageRecordSource
{
    /// <summary>Human-readable name, e.g. "Fashion-MNIST train".</summary>
    public abstract string Name { get; }

    /// <summary>[C, H, W] of every image.</summary>
    public abstract TensorShape Shape { get; }

    /// <summary>Class names; labels are indices into this list.</summary>
    public abstract IReadOnlyList<string> ClassNames { get; }

    /// <summary>Number of records.</summary>
    public abstract long RowCount { get; }

    /// <summary>True when records can be read in any order (uncompressed files).</summary>
    public abstract bool SupportsRandomAccess { get; }

    /// <summary>Opens a reader positioned before the first record.</summary>
    /// <param name="readImages">False to skip pixel data when only labels are needed.</param>
    public abstract ImageRecordReader Open(bool readImages);
}

/// <summary>Reads records of an <see cref="ImageRecordSource"/>.</summary>
internal abstract class ImageRecordReader : IDisposable
{
    /// <summary>Reads the next record. <paramref name="pixels"/> is untouched when images are not read.</summary>
    public abstract void ReadNext(Span<byte> pixels, out int label);

    /// <summary>Positions the reader before record <paramref name="row"/> (random-access sources only).</summary>
    public abstract void Seek(long row);

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases file handles.</summary>
    protected abstract void Dispose(bool disposing);

    /// <summary>Fills <paramref name="buffer"/> completely or throws a <see cref="DatasetFormatException"/>.</summary>
    protected static void ReadExactly(Stream stream, Span<byte> buffer, string path, string what)
    {
        try
        {
            var read = 0;
            while (read < buffer.Length)
            {
                var n = stream.Read(buffer[read..]);
                if (n == 0)
                    throw new DatasetFormatException(path, $"file ends in the middle of {what} (truncated)");
                read += n;
            }
        }
        catch (InvalidDataException ex)
        {
            throw new DatasetFormatException(path, $"corrupt compressed data while reading {what}: {ex.Message}", ex);
        }
        catch (EndOfStreamException ex)
        {
            throw new DatasetFormatException(path, $"file ends in the middle of {what} (truncated)", ex);
        }
    }
}
