using System.Buffers.Binary;
using SkiaSharp;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>Real PNG and JPEG bytes for image tests, and headers rewritten to claim other sizes.</summary>
public static class ImageFiles
{
    /// <summary>Encodes <paramref name="rgba"/> (width x height x 4 bytes, unpremultiplied) as PNG or JPEG.</summary>
    public static byte[] Encode(int width, int height, byte[] rgba, bool png)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        System.Runtime.InteropServices.Marshal.Copy(rgba, 0, bitmap.GetPixels(), width * height * 4);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(png ? SKEncodedImageFormat.Png : SKEncodedImageFormat.Jpeg, 90);
        return data.ToArray();
    }

    /// <summary>
    /// The image with its header claiming <paramref name="width"/> x <paramref name="height"/> (PNG: IHDR with a
    /// correct CRC, so decoders believe it; JPEG: the first start-of-frame marker), the data left as it was.
    /// </summary>
    public static byte[] WithClaimedSize(byte[] encoded, int width, int height)
    {
        var bytes = encoded.ToArray();
        if (bytes.Length > 33 && bytes[0] == 0x89 && bytes[1] == (byte)'P')
        {
            // Signature (8), IHDR length (4), "IHDR" (4), width, height, ..., CRC over "IHDR" + 13 data bytes.
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(16), width);
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(20), height);
            BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(29), Crc32(bytes.AsSpan(12, 17)));
            return bytes;
        }
        for (var i = 2; i + 9 < bytes.Length; i++)
        {
            // SOF0..SOF2: FF C0-C2, length (2), precision (1), height (2), width (2).
            if (bytes[i] == 0xFF && bytes[i + 1] is 0xC0 or 0xC1 or 0xC2)
            {
                BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(i + 5), (ushort)Math.Clamp(height, 0, ushort.MaxValue));
                BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(i + 7), (ushort)Math.Clamp(width, 0, ushort.MaxValue));
                break;
            }
        }
        return bytes;
    }

    /// <summary>
    /// The image cut short, its header intact: a PNG at half its length; a JPEG (mostly tables when small) halfway
    /// through the coded data after its start-of-scan marker.
    /// </summary>
    public static byte[] Truncated(byte[] encoded)
    {
        if (encoded[0] == 0x89) return encoded[..(encoded.Length / 2)];
        var scan = encoded.AsSpan().IndexOf([(byte)0xFF, (byte)0xDA]);
        if (scan < 0) throw new ArgumentException("No start-of-scan marker: not a JPEG.", nameof(encoded));
        return encoded[..((scan + encoded.Length) / 2)];
    }

    /// <summary>
    /// A well-formed PNG of a few dozen bytes whose header claims <paramref name="width"/> x <paramref name="height"/>
    /// 1-bit grayscale pixels: signature, IHDR, one IDAT holding a deflated first row only, IEND, every CRC correct.
    /// Decoders believe the header; decoding it would take 4 x width x height bytes for one row of data.
    /// </summary>
    public static byte[] TinyPngClaiming(int width, int height)
    {
        var row = new byte[1 + (width + 7) / 8]; // filter byte + 1 bit per pixel, all zero
        using var deflated = new MemoryStream();
        using (var zlib = new System.IO.Compression.ZLibStream(deflated, System.IO.Compression.CompressionLevel.SmallestSize)) zlib.Write(row);
        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header, width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), height);
        header[8] = 1; // bit depth 1, colour type 0 (grayscale), deflate, adaptive filtering, no interlace
        using var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        WriteChunk(png, "IHDR", header);
        WriteChunk(png, "IDAT", deflated.ToArray());
        WriteChunk(png, "IEND", []);
        return png.ToArray();
    }

    private static void WriteChunk(Stream png, string type, byte[] data)
    {
        var chunk = new byte[12 + data.Length];
        BinaryPrimitives.WriteInt32BigEndian(chunk, data.Length);
        System.Text.Encoding.ASCII.GetBytes(type, chunk.AsSpan(4));
        data.CopyTo(chunk, 8);
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(8 + data.Length), Crc32(chunk.AsSpan(4, 4 + data.Length)));
        png.Write(chunk);
    }

    /// <summary>CRC-32 (ISO-HDLC, as PNG chunks use), bit by bit: only a few header bytes are ever hashed.</summary>
    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        var crc = 0xFFFFFFFFu;
        foreach (var b in data)
        {
            crc ^= b;
            for (var k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
        }
        return ~crc;
    }
}
