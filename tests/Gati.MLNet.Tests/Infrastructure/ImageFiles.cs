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
