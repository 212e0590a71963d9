using CsCheck;
using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.ML;
using Microsoft.ML.Data;
using Xunit.Abstractions;

namespace Gati.MLNet.Tests;

/// <summary>
/// Property and fuzz tests of <c>LoadImageFolder</c> on real PNG and JPEG files: valid folders give one row per image
/// with its class; corrupt, truncated, empty or size-lying images fail with a <see cref="DatasetFormatException"/>
/// naming the file. Fixed seeds; GATI_FUZZ_ITERATIONS runs more cases (docs/hardening.md).
/// </summary>
public sealed class ImageFolderFuzzTests(ITestOutputHelper output)
{
    /// <summary>One image: size, pixels and format.</summary>
    public sealed record Image(int Width, int Height, byte[] Rgba, bool Png);

    /// <summary>A folder of classes and what is done to one of its images.</summary>
    public sealed record FolderCase(Image[][] Classes, int Target, Mutations.Mutation Mutation, (int Width, int Height)? ClaimedSize, int Size, bool Grayscale)
    {
        public override string ToString() =>
            $"{Classes.Length} classes, {Classes.Sum(c => c.Length)} images, target {Target}: {Mutation}, claims {ClaimedSize?.ToString() ?? "-"}, {Size}px {(Grayscale ? "gray" : "rgb")}";
    }

    private static readonly Gen<Image> Images =
        from width in Gen.Int[1, 24]
        from height in Gen.Int[1, 24]
        from rgba in Gen.Byte.Array[width * height * 4]
        from png in Gen.Bool
        select new Image(width, height, rgba, png);

    private static readonly Gen<(int, int)?> ClaimedSizes = Gen.Frequency(
        (4, (IGen<(int, int)?>)Gen.Const(((int, int)?)null)),
        (1, Gen.Select(Gen.OneOf(0, 1, 30000, 65535, 1 << 20, int.MaxValue), Gen.OneOf(0, 1, 30000, 65535, 1 << 20), (w, h) => ((int, int)?)(w, h))));

    private static readonly Gen<FolderCase> FolderCases =
        from classes in Images.Array[1, 3].Array[2, 3]
        from target in Gen.Int[0, 100]
        from mutation in Mutations.Any(noneOneIn: 3)
        from claimed in ClaimedSizes
        from size in Gen.Int[1, 12]
        from grayscale in Gen.Bool
        select new FolderCase(classes, target, mutation, claimed, size, grayscale);

    private sealed class Row
    {
        public string ImagePath { get; set; } = "";

        public uint Label { get; set; }

        [VectorType]
        public float[] Image { get; set; } = [];
    }

    [Fact]
    public void LoadImageFolder_GeneratedAndHostileImages_ReadOrFailNamingTheFile()
    {
        Fuzz.Run("image-folder", FolderCases, c =>
        {
            using var scratch = new TempDirectory();
            var root = scratch.Path;
            var files = new List<(string Path, int Class)>();
            for (var k = 0; k < c.Classes.Length; k++)
            {
                var folder = Path.Combine(root, $"class{k}");
                Directory.CreateDirectory(folder);
                for (var i = 0; i < c.Classes[k].Length; i++)
                {
                    var image = c.Classes[k][i];
                    var path = Path.Combine(folder, $"{i}.{(image.Png ? "png" : "jpg")}");
                    File.WriteAllBytes(path, ImageFiles.Encode(image.Width, image.Height, image.Rgba, image.Png));
                    files.Add((path, k));
                }
            }
            var target = files[c.Target % files.Count].Path;
            var bytes = File.ReadAllBytes(target);
            if (c.ClaimedSize is { } claimed) bytes = ImageFiles.WithClaimedSize(bytes, claimed.Width, claimed.Height);
            File.WriteAllBytes(target, c.Mutation.Apply(bytes));
            var untouched = c.ClaimedSize is null && c.Mutation.Kind == Mutations.Kind.None;

            var ml = new MLContext(0);
            Row[]? rows = null;
            try
            {
                var data = ml.Data.LoadImageFolder(root, new ImageFolderOptions { Width = c.Size, Height = c.Size, Grayscale = c.Grayscale });
                rows = ml.Data.CreateEnumerable<Row>(data, reuseRowObject: false).ToArray();
            }
            catch (DatasetFormatException ex)
            {
                Assert.Equal(target, ex.FilePath);
                Assert.StartsWith(target + ": ", ex.Message);
                Assert.False(untouched, $"a valid image was refused: {ex.Message}");
                return "refused";
            }
            Assert.Equal(files.Count, rows.Length);
            Assert.Equal(files.Select(f => (f.Path, (uint)f.Class + 1)).Order(), rows.Select(r => (r.ImagePath, r.Label)).Order());
            Assert.All(rows, r => Assert.Equal((c.Grayscale ? 1 : 3) * c.Size * c.Size, r.Image.Length));
            Assert.All(rows, r => Assert.All(r.Image, v => Assert.InRange(v, 0f, 1f)));
            return untouched ? "read (valid)" : "read (mutated)";
        }, ciIterations: 60, output);
    }
}
