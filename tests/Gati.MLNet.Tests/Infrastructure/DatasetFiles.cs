using System.Buffers.Binary;
using System.IO.Compression;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>Writes small datasets in the real published formats (IDX, CIFAR binary) for reader tests.</summary>
public static class DatasetFiles
{
    /// <summary>An IDX3 images file (N x height x width bytes), optionally gzip-compressed.</summary>
    public static void WriteIdxImages(string path, byte[][] images, int height, int width, bool gzip)
    {
        using var buffer = new MemoryStream();
        WriteHeader(buffer, 3, images.Length, height, width);
        foreach (var image in images) buffer.Write(image);
        Write(path, buffer.ToArray(), gzip);
    }

    /// <summary>An IDX1 labels file, optionally gzip-compressed.</summary>
    public static void WriteIdxLabels(string path, byte[] labels, bool gzip)
    {
        using var buffer = new MemoryStream();
        WriteHeader(buffer, 1, labels.Length);
        buffer.Write(labels);
        Write(path, buffer.ToArray(), gzip);
    }

    /// <summary>A Fashion-MNIST-style folder for one split, with deterministic pixels (image i, pixel p = (i * 31 + p) % 256).</summary>
    public static (byte[][] Images, byte[] Labels) WriteFashionMnistSplit(string directory, string prefix, int count, bool gzip, int size = 28)
    {
        var images = Enumerable.Range(0, count).Select(i => Enumerable.Range(0, size * size).Select(p => (byte)((i * 31 + p) % 256)).ToArray()).ToArray();
        var labels = Enumerable.Range(0, count).Select(i => (byte)(i % 10)).ToArray();
        var suffix = gzip ? ".gz" : "";
        WriteIdxImages(Path.Combine(directory, $"{prefix}-images-idx3-ubyte{suffix}"), images, size, size, gzip);
        WriteIdxLabels(Path.Combine(directory, $"{prefix}-labels-idx1-ubyte{suffix}"), labels, gzip);
        return (images, labels);
    }

    /// <summary>A CIFAR binary file: records of label byte(s) + 3072 planar RGB pixels.</summary>
    public static void WriteCifar(string path, IReadOnlyList<(byte[] Labels, byte[] Pixels)> records)
    {
        using var file = File.Create(path);
        foreach (var (labels, pixels) in records)
        {
            if (pixels.Length != 3072) throw new ArgumentException("CIFAR records hold 3072 pixels.");
            file.Write(labels);
            file.Write(pixels);
        }
    }

    /// <summary>Deterministic CIFAR pixels for record <paramref name="seed"/>: R plane, then G, then B.</summary>
    public static byte[] CifarPixels(int seed) => Enumerable.Range(0, 3072).Select(p => (byte)((seed * 17 + p * 3 + p / 1024 * 50) % 256)).ToArray();

    /// <summary>The bytes of an unsigned-byte IDX file with any header dimensions and any data (valid or not).</summary>
    public static byte[] Idx(int[] dimensions, ReadOnlySpan<byte> data)
    {
        using var buffer = new MemoryStream();
        WriteHeader(buffer, (byte)dimensions.Length, dimensions);
        buffer.Write(data);
        return buffer.ToArray();
    }

    /// <summary>
    /// <paramref name="content"/> gzip-compressed as <paramref name="members"/> concatenated gzip members (RFC 1952
    /// allows several; `cat a.gz b.gz` makes such a file), split at even byte offsets.
    /// </summary>
    public static byte[] Gzip(ReadOnlySpan<byte> content, int members = 1)
    {
        using var output = new MemoryStream();
        var start = 0;
        for (var m = 0; m < members; m++)
        {
            var end = m == members - 1 ? content.Length : content.Length * (m + 1) / members;
            using (var gzip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true))
                gzip.Write(content[start..end]);
            start = end;
        }
        return output.ToArray();
    }

    private static void WriteHeader(Stream stream, byte dimensions, params int[] sizes)
    {
        stream.Write([0, 0, 0x08, dimensions]);
        Span<byte> value = stackalloc byte[4];
        foreach (var size in sizes)
        {
            BinaryPrimitives.WriteInt32BigEndian(value, size);
            stream.Write(value);
        }
    }

    private static void Write(string path, byte[] content, bool gzip)
    {
        using var file = File.Create(path);
        if (!gzip)
        {
            file.Write(content);
            return;
        }
        using var compressed = new GZipStream(file, CompressionLevel.Fastest);
        compressed.Write(content);
    }

    /// <summary>Cuts a file to <paramref name="length"/> bytes.</summary>
    public static void Truncate(string path, long length)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write);
        file.SetLength(length);
    }
}
