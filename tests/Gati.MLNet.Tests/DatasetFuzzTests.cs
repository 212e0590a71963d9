using System.Buffers.Binary;
using CsCheck;
using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.ML;
using Microsoft.ML.Data;
using Xunit.Abstractions;

namespace Gati.MLNet.Tests;

/// <summary>
/// Property and fuzz tests of the dataset readers on real files in their published formats: valid datasets read back
/// exactly; hostile ones (truncated, bit-flipped, rewritten headers, forged gzip lengths, multi-member gzip, garbage)
/// either read or fail with a <see cref="DatasetFormatException"/> naming one of their files, with allocations bounded
/// by the files' real size. Fixed seeds; GATI_FUZZ_ITERATIONS runs more cases (docs/hardening.md).
/// </summary>
public sealed class DatasetFuzzTests(ITestOutputHelper output)
{
    /// <summary>Allowed allocation for reading a hostile dataset: a fixed allowance plus a multiple of the bytes on disk.</summary>
    private static long AllocationBound(long fileBytes) => (24L << 20) + 64 * fileBytes;

    private static List<(float[] Image, uint Label)> ReadAll(IDataView data, Random? rand)
    {
        var rows = new List<(float[], uint)>();
        using var cursor = data.GetRowCursor(data.Schema, rand);
        var image = cursor.GetGetter<VBuffer<float>>(data.Schema["Image"]);
        var label = cursor.GetGetter<uint>(data.Schema["Label"]);
        VBuffer<float> pixels = default;
        uint key = 0;
        while (cursor.MoveNext())
        {
            image(ref pixels);
            label(ref key);
            rows.Add((pixels.DenseValues().ToArray(), key));
        }
        return rows;
    }

    /// <summary>A Fashion-MNIST split and what is done to it.</summary>
    public sealed record IdxCase(int Count, byte[] Pixels, byte[] Labels, bool GzipImages, bool GzipLabels, int Members, bool TargetImages,
        int[]? Header, bool ForgeGzipLength, Mutations.Mutation Mutation, bool Shuffle)
    {
        public override string ToString() =>
            $"{Count} images, gzip {GzipImages}/{GzipLabels} x{Members}, {(TargetImages ? "images" : "labels")} header {(Header is null ? "-" : string.Join("x", Header))}, forge {ForgeGzipLength}, {Mutation}, shuffle {Shuffle}";
    }

    private static readonly Gen<int> Dimension = Gen.Frequency(
        (3, (IGen<int>)Gen.Int[0, 64]), (1, Gen.OneOf(28, 65536, int.MaxValue, -1, 0, 60000, 1 << 20)), (1, Gen.Int));

    private static readonly Gen<IdxCase> IdxCases =
        from count in Gen.Int[1, 6]
        from pixels in Gen.Byte.Array[count * 784]
        from labels in Gen.Frequency((9, (IGen<byte>)Gen.Byte[0, 9]), (1, Gen.Byte)).Array[count]
        from gzipImages in Gen.Bool
        from gzipLabels in Gen.Bool
        from members in Gen.Frequency((3, (IGen<int>)Gen.Const(1)), (1, Gen.Int[2, 4]))
        from targetImages in Gen.Bool
        from header in Gen.Frequency((3, (IGen<int[]?>)Gen.Const((int[]?)null)), (1, Dimension.Array[1, 4].Select(d => (int[]?)d)))
        from forge in Gen.Bool
        from mutation in Mutations.Any()
        from shuffle in Gen.Bool
        select new IdxCase(count, pixels, labels, gzipImages, gzipLabels, members, targetImages, header, forge, mutation, shuffle);

    [Fact]
    public void LoadFashionMnist_GeneratedAndHostileIdxFiles_ReadExactlyOrFailNamingTheFile()
    {
        Fuzz.Run("idx", IdxCases, c =>
        {
            using var scratch = new TempDirectory(); // per case: the long run writes hundreds of thousands of files
            var dir = scratch.Path;
            var images = Path.Combine(dir, "t10k-images-idx3-ubyte" + (c.GzipImages ? ".gz" : ""));
            var labels = Path.Combine(dir, "t10k-labels-idx1-ubyte" + (c.GzipLabels ? ".gz" : ""));
            File.WriteAllBytes(images, Encode(DatasetFiles.Idx(c.TargetImages && c.Header is { } h ? h : [c.Count, 28, 28], c.Pixels), c.GzipImages, c.Members,
                c.ForgeGzipLength && c.TargetImages ? c.Header : null, c.Mutation, c.TargetImages));
            File.WriteAllBytes(labels, Encode(DatasetFiles.Idx(!c.TargetImages && c.Header is { } l ? l : [c.Count], c.Labels), c.GzipLabels, c.Members,
                c.ForgeGzipLength && !c.TargetImages ? c.Header : null, c.Mutation, !c.TargetImages));
            var untouched = c.Header is null && c.Mutation.Kind == Mutations.Kind.None;
            var bytes = new FileInfo(images).Length + new FileInfo(labels).Length;

            List<(float[] Image, uint Label)>? rows = null;
            DatasetFormatException? error = null;
            var allocated = Fuzz.AllocatedBytes(() =>
            {
                try
                {
                    var data = new MLContext(0).Data.LoadFashionMnist(DatasetSplit.Test, dir);
                    rows = ReadAll(data, c.Shuffle && data.CanShuffle ? new Random(c.Count) : null);
                }
                catch (DatasetFormatException ex)
                {
                    error = ex;
                }
            });

            Assert.True(allocated <= AllocationBound(bytes), $"allocated {allocated} bytes for {bytes} bytes of files");
            if (error is not null)
            {
                Assert.Contains(error.FilePath, new[] { images, labels });
                Assert.StartsWith(error.FilePath + ": ", error.Message);
                Assert.False(untouched && c.Labels.All(l => l < 10), $"a valid split was refused: {error.Message}");
                return "refused";
            }
            Assert.NotNull(rows);
            if (!untouched) return "read";
            // A valid split reads back exactly (in file order, or as a permutation when shuffled).
            var expected = Enumerable.Range(0, c.Count).Select(i => (Pixel: Normalized(c.Pixels[i * 784 + 783]), Label: c.Labels[i] + 1u)).ToArray();
            var actual = rows.Select(r => (Pixel: r.Image[783], r.Label)).ToArray();
            Assert.Equal(expected.OrderBy(r => r.Label).ThenBy(r => r.Pixel), actual.OrderBy(r => r.Label).ThenBy(r => r.Pixel));
            if (!c.Shuffle) Assert.Equal(expected, actual);
            return "read exactly";
        }, ciIterations: 500, output);
    }

    private static float Normalized(byte pixel) => (pixel / 255f - 0.2860f) / 0.3530f;

    /// <summary>Gzips (in members) when asked, forges the gzip length field to match a hostile header, then mutates.</summary>
    private static byte[] Encode(byte[] idx, bool gzip, int members, int[]? forgeFor, Mutations.Mutation mutation, bool mutate)
    {
        var bytes = gzip ? DatasetFiles.Gzip(idx, members) : idx;
        if (gzip && forgeFor is not null)
        {
            var claimed = 4 + 4L * forgeFor.Length + forgeFor.Aggregate(1L, (a, d) => unchecked(a * d));
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(bytes.Length - 4), unchecked((uint)claimed));
        }
        return mutate ? mutation.Apply(bytes) : bytes;
    }

    /// <summary>A CIFAR test file (and optional class-name file) and what is done to it.</summary>
    public sealed record CifarCase(bool Cifar100, byte[][] Labels, byte[] Pixels, int MetaLines, byte[]? MetaBytes, bool MutateMeta, Mutations.Mutation Mutation,
        bool Shuffle)
    {
        public override string ToString() =>
            $"CIFAR-{(Cifar100 ? 100 : 10)}, {Labels.Length} records, meta {(MetaBytes is not null ? "random bytes" : MetaLines.ToString(System.Globalization.CultureInfo.InvariantCulture))}, {(MutateMeta ? "meta" : "data")} {Mutation}, shuffle {Shuffle}";
    }

    private static readonly Gen<CifarCase> CifarCases =
        from cifar100 in Gen.Bool
        from records in Gen.Int[1, 4]
        from labels in Gen.Frequency((9, (IGen<byte>)Gen.Byte[0, 9]), (1, Gen.Byte)).Array[cifar100 ? 2 : 1].Array[records]
        from pixels in Gen.Byte.Array[records * 3072]
        from metaLines in Gen.Frequency((4, (IGen<int>)Gen.Const(-1)), (4, Gen.Const(cifar100 ? 20 : 10)), (1, Gen.Int[0, 30]))
        from metaBytes in Gen.Frequency((5, (IGen<byte[]?>)Gen.Const((byte[]?)null)), (1, Gen.Byte.Array[0, 300].Select(b => (byte[]?)b)))
        from mutateMeta in Gen.Frequency((5, (IGen<bool>)Gen.Const(false)), (1, Gen.Const(true)))
        from mutation in Mutations.Any()
        from shuffle in Gen.Bool
        select new CifarCase(cifar100, labels, pixels, metaLines, metaBytes, mutateMeta, mutation, shuffle);

    [Fact]
    public void LoadCifar_GeneratedAndHostileBinaryFiles_ReadExactlyOrFailNamingTheFile()
    {
        Fuzz.Run("cifar", CifarCases, c =>
        {
            using var scratch = new TempDirectory(); // per case: the long run writes hundreds of thousands of files
            var dir = scratch.Path;
            var data = Path.Combine(dir, c.Cifar100 ? "test.bin" : "test_batch.bin");
            var meta = Path.Combine(dir, c.Cifar100 ? "coarse_label_names.txt" : "batches.meta.txt");
            var recordLength = c.Labels[0].Length + 3072;
            var file = new byte[c.Labels.Length * recordLength];
            for (var r = 0; r < c.Labels.Length; r++)
            {
                c.Labels[r].CopyTo(file, r * recordLength);
                c.Pixels.AsSpan(r * 3072, 3072).CopyTo(file.AsSpan(r * recordLength + c.Labels[r].Length));
            }
            File.WriteAllBytes(data, c.MutateMeta ? file : c.Mutation.Apply(file));
            if (c.MetaBytes is not null || c.MetaLines >= 0)
            {
                var text = c.MetaBytes ?? System.Text.Encoding.UTF8.GetBytes(string.Join("\n", Enumerable.Range(0, c.MetaLines).Select(i => $"class {i}")));
                File.WriteAllBytes(meta, c.MutateMeta ? c.Mutation.Apply(text) : text);
            }
            var classes = c.Cifar100 ? 20 : 10;
            var labelIndex = 0; // CIFAR-100 is read with its coarse (first) label, CIFAR-10 has one label byte
            var untouched = c.Mutation.Kind == Mutations.Kind.None && c.MetaBytes is null && (c.MetaLines < 0 || c.MetaLines == classes);
            var bytes = new FileInfo(data).Length + (File.Exists(meta) ? new FileInfo(meta).Length : 0);

            List<(float[] Image, uint Label)>? rows = null;
            DatasetFormatException? error = null;
            var allocated = Fuzz.AllocatedBytes(() =>
            {
                try
                {
                    var ml = new MLContext(0);
                    var view = c.Cifar100 ? ml.Data.LoadCifar100(dir, DatasetSplit.Test, Cifar100LabelKind.Coarse) : ml.Data.LoadCifar10(dir, DatasetSplit.Test);
                    rows = ReadAll(view, c.Shuffle ? new Random(3) : null);
                }
                catch (DatasetFormatException ex)
                {
                    error = ex;
                }
            });

            Assert.True(allocated <= AllocationBound(bytes), $"allocated {allocated} bytes for {bytes} bytes of files");
            var validLabels = c.Labels.All(l => l[labelIndex] < classes);
            if (error is not null)
            {
                Assert.Contains(error.FilePath, new[] { data, meta });
                Assert.StartsWith(error.FilePath + ": ", error.Message);
                Assert.False(untouched && validLabels, $"a valid file was refused: {error.Message}");
                return "refused";
            }
            Assert.NotNull(rows);
            if (!untouched) return "read";
            var expected = c.Labels.Select(l => l[labelIndex] + 1u).Order();
            Assert.Equal(expected, rows.Select(r => r.Label).Order());
            if (!c.Shuffle)
                for (var r = 0; r < rows.Count; r++)
                    Assert.Equal(c.Labels[r][labelIndex] + 1u, rows[r].Label);
            return "read exactly";
        }, ciIterations: 500, output);
    }
}
