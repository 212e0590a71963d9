using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

public sealed class AugmentedImagesViewTests
{
    private readonly MLContext _ml = new(0);

    private IDataView Images(int rows) => _ml.Data.TakeRows(_ml.Data.LoadFashionMnist(DatasetSplit.Test, RealData.FashionMnistDirectory), rows);

    private static (float[][] Images, uint[] Labels) Read(IDataView data)
    {
        var images = FeatureExtractionTests.Column(data, "Image");
        var labels = data.GetColumn<uint>("Label").ToArray();
        return (images, labels);
    }

    [Fact]
    public void AugmentImages_OriginalRowsThenCopies_SameLabelsShiftedOrMirroredPixels()
    {
        var source = Images(40);
        var augmented = _ml.Data.AugmentImages(source, copies: 2, seed: 5);
        Assert.Equal(120, augmented.GetRowCount());
        var (original, labels) = Read(source);
        var (all, allLabels) = Read(augmented);
        Assert.Equal(120, all.Length);
        for (var pass = 0; pass < 3; pass++)
            Assert.Equal(labels, allLabels.Skip(pass * 40).Take(40));
        Assert.Equal(original, all.Take(40));
        var changed = Enumerable.Range(40, 80).Count(i => !all[i].SequenceEqual(original[i % 40]));
        Assert.True(changed > 60, $"only {changed} of 80 augmented images differ from their original");
        Assert.NotEqual(all.Skip(40).Take(40), all.Skip(80).Take(40)); // each pass draws its own augmentations
        // Pixels move, none are invented: every augmented value is an original value of that image or the padding (0).
        for (var i = 40; i < 120; i++)
        {
            var values = original[i % 40].Append(0f).ToHashSet();
            Assert.All(all[i], v => Assert.Contains(v, values));
        }
    }

    [Fact]
    public void AugmentImages_SameSeed_SameRowsInEveryCursor_OtherSeedOtherRows()
    {
        var source = Images(20);
        var first = Read(_ml.Data.AugmentImages(source, 1, seed: 7)).Images;
        var again = Read(_ml.Data.AugmentImages(source, 1, seed: 7)).Images;
        var other = Read(_ml.Data.AugmentImages(source, 1, seed: 8)).Images;
        Assert.Equal(first, again);
        Assert.NotEqual(first.Skip(20), other.Skip(20));
    }

    [Fact]
    public void AugmentImages_FlipOnly_GivesTheImageOrItsMirror()
    {
        var source = Images(30);
        var original = Read(source).Images;
        var flipped = Read(_ml.Data.AugmentImages(source, 1, padding: 0, horizontalFlip: true, seed: 1)).Images.Skip(30).ToArray();
        var mirrors = 0;
        for (var i = 0; i < 30; i++)
        {
            var mirror = Enumerable.Range(0, 28 * 28).Select(p => original[i][p / 28 * 28 + 27 - p % 28]).ToArray();
            var isMirror = flipped[i].SequenceEqual(mirror);
            Assert.True(isMirror || flipped[i].SequenceEqual(original[i]), $"row {i} is neither the image nor its mirror");
            if (isMirror && !mirror.SequenceEqual(original[i])) mirrors++;
        }
        Assert.InRange(mirrors, 5, 25);
    }

    [Fact]
    public void AugmentImages_ColumnThatIsNotAnImage_IsRefusedByName()
    {
        var error = Assert.Throws<ArgumentException>(() => _ml.Data.AugmentImages(Images(5), 1, imageColumnName: "Label"));
        Assert.Contains("'Label' must be Vector<Single, C, H, W>", error.Message);
        Assert.Contains("'Picture' not found", Assert.Throws<ArgumentException>(() => _ml.Data.AugmentImages(Images(5), 1, imageColumnName: "Picture")).Message);
    }
}
