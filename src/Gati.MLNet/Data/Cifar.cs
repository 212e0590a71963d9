namespace Gati.MLNet.Data;

/// <summary>Which CIFAR-100 label to read.</summary>
public enum Cifar100LabelKind
{
    /// <summary>The 100 fine classes.</summary>
    Fine,

    /// <summary>The 20 coarse superclasses.</summary>
    Coarse,
}

/// <summary>
/// CIFAR-10 and CIFAR-100 in their published binary versions (<c>cifar-10-batches-bin</c>,
/// <c>cifar-100-binary</c>). The folder given may be that folder or the one that contains it.
/// </summary>
public static class Cifar
{
    /// <summary>CIFAR-10 class names (used when <c>batches.meta.txt</c> is absent).</summary>
    public static IReadOnlyList<string> Cifar10ClassNames { get; } =
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

    /// <summary>The CIFAR-10 binary files of a split.</summary>
    public static IReadOnlyList<string> Cifar10Files(string directory, DatasetSplit split)
    {
        var root = Resolve(directory, "cifar-10-batches-bin", "test_batch.bin");
        return split == DatasetSplit.Train
            ? Enumerable.Range(1, 5).Select(i => Path.Combine(root, $"data_batch_{i}.bin")).ToArray()
            : [Path.Combine(root, "test_batch.bin")];
    }

    /// <summary>The CIFAR-100 binary file of a split.</summary>
    public static string Cifar100File(string directory, DatasetSplit split) =>
        Path.Combine(Resolve(directory, "cifar-100-binary", "test.bin"), split == DatasetSplit.Train ? "train.bin" : "test.bin");

    internal static ImageRecordSource OpenCifar10(string directory, DatasetSplit split)
    {
        var files = Cifar10Files(directory, split);
        var names = ReadNames(Path.Combine(Path.GetDirectoryName(files[0])!, "batches.meta.txt"), 10) ?? Cifar10ClassNames;
        return new CifarBinarySource($"CIFAR-10 {split.ToString().ToLowerInvariant()}", files, labelBytes: 1, labelIndex: 0, names);
    }

    internal static ImageRecordSource OpenCifar100(string directory, DatasetSplit split, Cifar100LabelKind labels)
    {
        var file = Cifar100File(directory, split);
        var folder = Path.GetDirectoryName(file)!;
        var (namesFile, count) = labels == Cifar100LabelKind.Fine ? ("fine_label_names.txt", 100) : ("coarse_label_names.txt", 20);
        var names = ReadNames(Path.Combine(folder, namesFile), count)
                    ?? Enumerable.Range(0, count).Select(i => $"{labels.ToString().ToLowerInvariant()}_{i}").ToArray();
        return new CifarBinarySource($"CIFAR-100 {split.ToString().ToLowerInvariant()} ({labels.ToString().ToLowerInvariant()} labels)",
            [file], labelBytes: 2, labelIndex: labels == Cifar100LabelKind.Coarse ? 0 : 1, names);
    }

    private static string Resolve(string directory, string publishedFolder, string marker)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"CIFAR folder '{directory}' does not exist.");
        if (File.Exists(Path.Combine(directory, marker))) return directory;
        var nested = Path.Combine(directory, publishedFolder);
        if (File.Exists(Path.Combine(nested, marker))) return nested;
        throw new FileNotFoundException(
            $"'{directory}' holds neither {marker} nor {publishedFolder}/{marker}: is this the CIFAR binary version?", Path.Combine(directory, marker));
    }

    /// <summary>Class names, one per non-empty line; null when the file is absent.</summary>
    private static string[]? ReadNames(string path, int expected)
    {
        if (!File.Exists(path)) return null;
        var names = File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (names.Length != expected)
            throw new DatasetFormatException(path, $"lists {names.Length} class names, expected {expected}");
        return names;
    }
}
