namespace Gati.MLNet.Data;

/// <summary>Fashion-MNIST (Zalando, MIT licence): 70k 28x28 grayscale images of 10 clothing classes in IDX format.</summary>
public static class FashionMnist
{
    /// <summary>Where Debian's <c>dataset-fashion-mnist</c> package installs the files.</summary>
    public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";

    /// <summary>Height and width of every image: files holding other sizes are not Fashion-MNIST and are refused.</summary>
    public const int ImageSize = 28;

    /// <summary>The ten class names, in label order.</summary>
    public static IReadOnlyList<string> ClassNames { get; } =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    /// <summary>The images and labels files of a split in <paramref name="directory"/> (uncompressed preferred).</summary>
    public static (string Images, string Labels) Files(string directory, DatasetSplit split)
    {
        var prefix = split == DatasetSplit.Train ? "train" : "t10k";
        return (Find(directory, $"{prefix}-images-idx3-ubyte"), Find(directory, $"{prefix}-labels-idx1-ubyte"));
    }

    internal static ImageRecordSource Open(string? directory, DatasetSplit split)
    {
        directory ??= DefaultDirectory;
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException(
                $"Fashion-MNIST folder '{directory}' does not exist. On Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist " +
                $"(installs to {DefaultDirectory}), or pass the folder holding the IDX files.");
        var (images, labels) = Files(directory, split);
        return new IdxImageSource($"Fashion-MNIST {split.ToString().ToLowerInvariant()}", images, labels, ClassNames, (ImageSize, ImageSize));
    }

    private static string Find(string directory, string stem)
    {
        foreach (var candidate in new[] { stem, stem + ".gz" })
        {
            var path = Path.Combine(directory, candidate);
            if (File.Exists(path)) return path;
        }
        throw new FileNotFoundException($"Fashion-MNIST file {stem}[.gz] not found in '{directory}'.", Path.Combine(directory, stem + ".gz"));
    }
}
