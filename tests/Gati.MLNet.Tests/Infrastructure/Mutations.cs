using CsCheck;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>Byte-level mutations of files, shared by the fuzz targets.</summary>
public static class Mutations
{
    /// <summary>What to do to a file's bytes.</summary>
    public enum Kind
    {
        None,
        Truncate,
        FlipBits,
        OverwriteBytes,
        AppendBytes,
        InsertBytes,
        DeleteBytes,
        RandomContent,
        Empty,
        BoundaryInt32,
    }

    // Counts and lengths that readers must not trust: written over a random int32, in either byte order.
    private static readonly int[] BoundaryValues = [0, 1, -1, 2, 255, 256, 65535, 65536, 1 << 20, 1 << 24, 1 << 30, int.MaxValue, int.MinValue];

    /// <summary>A mutation: its kind and the random numbers that place it.</summary>
    public sealed record Mutation(Kind Kind, uint[] Numbers, byte[] Bytes)
    {
        public byte[] Apply(byte[] original)
        {
            var data = original.ToArray();
            var n = data.Length;
            int At(int k) => n == 0 ? 0 : (int)(Numbers[k % Numbers.Length] % (uint)n);
            switch (Kind)
            {
                case Kind.Truncate:
                    return data[..At(0)];
                case Kind.FlipBits:
                    for (var k = 0; k < Numbers.Length && n > 0; k++) data[At(k)] ^= (byte)(1 << (int)(Numbers[k] >> 28 & 7));
                    return data;
                case Kind.OverwriteBytes:
                    for (var k = 0; k < Bytes.Length && n > 0; k++) data[(At(0) + k) % n] = Bytes[k];
                    return data;
                case Kind.AppendBytes:
                    return [.. data, .. Bytes];
                case Kind.InsertBytes:
                    return [.. data[..At(0)], .. Bytes, .. data[At(0)..]];
                case Kind.DeleteBytes:
                    var from = At(0);
                    return [.. data[..from], .. data[Math.Min(n, from + 1 + (int)(Numbers[^1] % 64))..]];
                case Kind.RandomContent:
                    return Bytes;
                case Kind.Empty:
                    return [];
                case Kind.BoundaryInt32:
                    if (n < 4) return data;
                    var at = (int)(Numbers[0] % (uint)(n - 3));
                    var value = BoundaryValues[Numbers[^1] % (uint)BoundaryValues.Length];
                    if ((Numbers[^1] & 0x100) == 0) System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(at), value);
                    else System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(at), value);
                    return data;
                default:
                    return data;
            }
        }

        public override string ToString() => $"{Kind}[{string.Join(",", Numbers.Take(4))}; {Bytes.Length} bytes]";
    }

    /// <summary>Mutations, "none" about one case in <paramref name="noneOneIn"/>; written bytes favour boundary values (0x00, 0xFF, 0x7F, 0x80).</summary>
    public static Gen<Mutation> Any(int noneOneIn = 6)
    {
        var kinds = Enum.GetValues<Kind>().Where(k => k != Kind.None).ToArray();
        var kind = CsCheck.Gen.Frequency((1, (IGen<Kind>)CsCheck.Gen.Const(Kind.None)), (noneOneIn - 1, CsCheck.Gen.OneOf(kinds)));
        var bytes = CsCheck.Gen.Frequency((2, (IGen<byte>)CsCheck.Gen.Byte), (1, CsCheck.Gen.OneOf((byte)0, (byte)0xFF, (byte)0x7F, (byte)0x80))).Array[1, 64];
        return CsCheck.Gen.Select(kind, CsCheck.Gen.UInt.Array[1, 8], bytes, (k, numbers, b) => new Mutation(k, numbers, b));
    }
}
