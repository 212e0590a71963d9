using Gati.MLNet.Data;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;

namespace Gati.MLNet;

/// <summary>
/// Dataset loaders on <c>mlContext.Data</c>. Every loader returns a streaming <see cref="IDataView"/> with
/// <c>Image</c> (Vector&lt;Single, C, H, W&gt;, normalised per channel) and <c>Label</c> (Key&lt;UInt32, k&gt; with
/// class names as KeyValues); records are read from disk as cursors move.
/// </summary>
public static class DataCatalogExtensions
{
    /// <summary>Fashion-MNIST from its IDX files (gzip or plain), by default where Debian's dataset-fashion-mnist puts them.</summary>
    /// <param name="catalog">mlContext.Data.</param>
    /// <param name="split">Train (60k) or Test (10k).</param>
    /// <param name="directory">Folder of the IDX files; null = /usr/share/datasets/fashion-mnist.</param>
    /// <param name="normalization">Per-channel normalisation; null = Fashion-MNIST's mean and std.</param>
    public static IDataView LoadFashionMnist(this DataOperationsCatalog catalog, DatasetSplit split = DatasetSplit.Train,
        string? directory = null, ChannelNormalization? normalization = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new ImageDatasetView(FashionMnist.Open(directory, split), normalization ?? ChannelNormalization.FashionMnist);
    }

    /// <summary>
    /// <paramref name="data"/>'s rows, then <paramref name="copies"/> more passes over them with the image augmented as
    /// ResNet training augments it (a random crop from the image padded by <paramref name="padding"/> pixels, a random
    /// horizontal flip); other columns (e.g. Label) pass through. Deterministic: a row's augmentation depends only on
    /// <paramref name="seed"/>, the pass and the row's position. For distilling predictors from more images than the
    /// dataset holds: the base model labels each copy, and unseen variants of training images are labelled as it labels
    /// new images.
    /// </summary>
    /// <param name="catalog">mlContext.Data.</param>
    /// <param name="data">A view with an image column (Vector&lt;Single, C, H, W&gt;).</param>
    /// <param name="copies">Augmented passes after the original rows (0 returns the rows once).</param>
    /// <param name="padding">Crop padding in pixels (0: no shift).</param>
    /// <param name="horizontalFlip">Flip half the images left-right.</param>
    /// <param name="seed">Seed of the augmentations.</param>
    /// <param name="imageColumnName">The image column.</param>
    public static IDataView AugmentImages(this DataOperationsCatalog catalog, IDataView data, int copies, int padding = 4,
        bool horizontalFlip = true, int seed = 0, string imageColumnName = "Image")
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new AugmentedImagesView(data, imageColumnName, copies, padding, horizontalFlip, seed);
    }

    /// <summary>CIFAR-10 from the binary version (data_batch_1..5.bin, test_batch.bin).</summary>
    /// <param name="catalog">mlContext.Data.</param>
    /// <param name="directory">cifar-10-batches-bin, or the folder containing it.</param>
    /// <param name="split">Train (50k) or Test (10k).</param>
    /// <param name="normalization">Per-channel normalisation; null = the reference's CIFAR-10 statistics.</param>
    public static IDataView LoadCifar10(this DataOperationsCatalog catalog, string directory, DatasetSplit split = DatasetSplit.Train,
        ChannelNormalization? normalization = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        return new ImageDatasetView(Cifar.OpenCifar10(directory, split), normalization ?? ChannelNormalization.Cifar10);
    }

    /// <summary>CIFAR-100 from the binary version (train.bin, test.bin).</summary>
    /// <param name="catalog">mlContext.Data.</param>
    /// <param name="directory">cifar-100-binary, or the folder containing it.</param>
    /// <param name="split">Train (50k) or Test (10k).</param>
    /// <param name="labels">Fine (100 classes) or Coarse (20 superclasses).</param>
    /// <param name="normalization">Per-channel normalisation; null = the reference's CIFAR-100 statistics.</param>
    public static IDataView LoadCifar100(this DataOperationsCatalog catalog, string directory, DatasetSplit split = DatasetSplit.Train,
        Cifar100LabelKind labels = Cifar100LabelKind.Fine, ChannelNormalization? normalization = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        return new ImageDatasetView(Cifar.OpenCifar100(directory, split, labels), normalization ?? ChannelNormalization.Cifar100);
    }

    /// <summary>
    /// A folder of images with one sub-folder per class, through ML.NET ImageAnalytics (LoadImages,
    /// ResizeImages, ExtractPixels) and per-channel normalisation. Also has an <c>ImagePath</c> column.
    /// </summary>
    /// <param name="catalog">mlContext.Data.</param>
    /// <param name="directory">The root folder; its sub-folder names are the classes (ordinal order).</param>
    /// <param name="options">Size, channels and normalisation; null = 32x32 RGB in [0, 1].</param>
    public static IDataView LoadImageFolder(this DataOperationsCatalog catalog, string directory, ImageFolderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        return ImageFolder.Load(new MLContext(), directory, options ?? new ImageFolderOptions());
    }

    /// <summary>
    /// The files of an image folder (one sub-folder per class) as <c>ImagePath</c> (absolute path, text) and <c>Label</c>
    /// (a key over the sub-folder names in ordinal order), nothing decoded: the input of ML.NET's image tutorials'
    /// pipelines (<c>LoadImages(imageFolder: null)</c>, <c>ResizeImages</c>, <c>ExtractPixels</c>, a featurizer, a trainer).
    /// </summary>
    /// <param name="catalog">mlContext.Data.</param>
    /// <param name="directory">The root folder; its sub-folder names are the classes.</param>
    /// <param name="shuffleSeed">Null: the files class by class, in ordinal order; a number: one random order fixed by it
    /// (the same in every cursor and process, so rows taken or skipped by position stay the same rows).</param>
    public static IDataView LoadImagePaths(this DataOperationsCatalog catalog, string directory, int? shuffleSeed = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        return ImageFolder.LoadPaths(new MLContext(), directory, new ImageFolderOptions().Extensions, shuffleSeed);
    }

    /// <summary>
    /// Writes Fashion-MNIST images as PNG files into class sub-folders of <paramref name="outputDirectory"/> (28 x 28
    /// grayscale, <c>{class}/{index:D6}.png</c>): the product photos as an image folder, for pipelines that load image files
    /// (<see cref="LoadImagePaths"/>). Resumable: files already written are kept.
    /// </summary>
    /// <param name="catalog">mlContext.Data.</param>
    /// <param name="outputDirectory">Where the class folders go.</param>
    /// <param name="split">Train or test.</param>
    /// <param name="rows">How many images (null: the rest of the split).</param>
    /// <param name="skip">Images of the split to skip first.</param>
    /// <param name="dataDirectory">The folder holding the IDX files (null: Debian's package).</param>
    /// <returns>The number of files written by this call.</returns>
    public static int ExportFashionMnistImages(this DataOperationsCatalog catalog, string outputDirectory, DatasetSplit split = DatasetSplit.Train,
        long? rows = null, long skip = 0, string? dataDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDirectory);
        var source = FashionMnist.Open(dataDirectory, split);
        return ImageFolder.Export(source, outputDirectory, skip, rows ?? source.RowCount - skip);
    }

    /// <summary>
    /// A feature dump written by <see cref="FeatureDump.Write"/>, as a streaming, shuffle-capable view with columns
    /// Layer{n} (Vector&lt;Single, C, H, W&gt;), BaseLogits, BasePredictedLabel and Label. Chunk files are checked
    /// against the manifest (headers and sizes) when the view is created.
    /// </summary>
    /// <param name="catalog">mlContext.Data.</param>
    /// <param name="directory">The dump folder (holding manifest.json).</param>
    /// <param name="layers">Layers to expose; null = all in the dump.</param>
    public static IDataView LoadFeatureDump(this DataOperationsCatalog catalog, string directory, IReadOnlyList<int>? layers = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        return new FeatureDumpView(directory, layers, "Layer", "BaseLogits", "BasePredictedLabel", DefaultColumnNames.Label);
    }
}
