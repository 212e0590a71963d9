namespace Gati.Cli.Infrastructure;

/// <summary>The dataset a command reads.</summary>
internal enum DatasetKind
{
    FashionMnist,
    Cifar10,
    Cifar100,

    /// <summary>An image folder with train/ and test/ sub-folders, each with one folder per class (gati images writes one).</summary>
    Images,
}

/// <summary>--dataset and --data-dir, shared by the commands that read a dataset.</summary>
internal sealed class DatasetArguments
{
    public Option<string> Dataset { get; } = new("--dataset")
    {
        Description = "Dataset: fashion-mnist (IDX files), cifar10 or cifar100 (binary versions), or images (a folder with train/ and test/ class sub-folders, read as image paths for models that load images themselves, such as imported ML.NET pipelines).",
        DefaultValueFactory = _ => "fashion-mnist",
    };

    public Option<string?> DataDir { get; } = new("--data-dir")
    {
        Description = "Folder holding the dataset files. Default for fashion-mnist: /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist); required for CIFAR and images.",
    };

    public void AddTo(Command command)
    {
        Dataset.AcceptOnlyFromAmong("fashion-mnist", "cifar10", "cifar100", "images");
        command.Options.Add(Dataset);
        command.Options.Add(DataDir);
    }

    public DatasetSpec Read(ParseResult result) => new(Parse(result.GetValue(Dataset)!), result.GetValue(DataDir));

    public static DatasetKind Parse(string name) => name switch
    {
        "fashion-mnist" => DatasetKind.FashionMnist,
        "cifar10" => DatasetKind.Cifar10,
        "cifar100" => DatasetKind.Cifar100,
        "images" => DatasetKind.Images,
        _ => throw new ArgumentException($"Unknown dataset '{name}'."),
    };
}

/// <summary>A dataset choice, resolved to IDataViews on demand.</summary>
internal sealed record DatasetSpec(DatasetKind Kind, string? DataDir)
{
    public string Name => Kind switch
    {
        DatasetKind.FashionMnist => "fashion-mnist",
        DatasetKind.Cifar10 => "cifar10",
        DatasetKind.Images => "images",
        _ => "cifar100",
    };

    /// <summary>Horizontal flips suit all three datasets (clothing, natural images).</summary>
    public bool FlipByDefault => true;

    public IDataView Load(MLContext context, DatasetSplit split, long? rows = null)
    {
        var data = Kind switch
        {
            DatasetKind.FashionMnist => context.Data.LoadFashionMnist(split, DataDir),
            DatasetKind.Cifar10 => context.Data.LoadCifar10(RequireDir(), split),
            DatasetKind.Images => ImagePaths(context, split),
            _ => context.Data.LoadCifar100(RequireDir(), split),
        };
        return rows is { } n ? context.Data.TakeRows(data, n) : data;
    }

    private string RequireDir() => DataDir ?? throw new ArgumentException($"--data-dir is required for {Name}.");

    /// <summary>
    /// The split's image paths and labels in one fixed random order (the folder lists class by class; every command that
    /// reads the split sees the same order, so held-out rows stay held out).
    /// </summary>
    private IDataView ImagePaths(MLContext context, DatasetSplit split)
    {
        var folder = Path.Combine(RequireDir(), split == DatasetSplit.Train ? "train" : "test");
        return context.Data.LoadImagePaths(folder, shuffleSeed: 0);
    }
}
