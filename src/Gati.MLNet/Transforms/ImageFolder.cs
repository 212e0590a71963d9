using Gati.MLNet.Data;
using Microsoft.ML;
using Microsoft.ML.Transforms.Image;
using SkiaSharp;

namespace Gati.MLNet.Transforms;

/// <summary>
/// Images in class sub-folders (<c>root/cat/1.png</c>, <c>root/dog/2.jpg</c>) through ML.NET ImageAnalytics:
/// LoadImages, ResizeImages, (ConvertToGrayscale,) ExtractPixels, then per-channel normalisation.
/// Classes are the sub-folder names in ordinal order.
/// </summary>
public static class ImageFolder
{
    /// <summary>The column holding each image's path.</summary>
    public const string ImagePathColumnName = "ImagePath";

    /// <summary>
    /// The preprocessing pipeline from an image path column to the normalised <c>Image</c> vector, for use in
    /// serving pipelines (the same steps <see cref="DataCatalogExtensions.LoadImageFolder"/> applies).
    /// </summary>
    public static IEstimator<ITransformer> Preprocessing(MLContext context, ImageFolderOptions options,
        string imagePathColumnName = ImagePathColumnName, string outputColumnName = DefaultColumnNames.Image)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        CheckSkiaSharp();
        return LoadStage(context, imagePathColumnName).Append(PixelStage(context, options, outputColumnName));
    }

    private const string BitmapColumn = "__GatiImageObject";
    private const string PixelsColumn = "__GatiImagePixels";

    private static IEstimator<ITransformer> LoadStage(MLContext context, string imagePathColumnName) =>
        context.Transforms.LoadImages(BitmapColumn, imageFolder: null, imagePathColumnName);

    private static IEstimator<ITransformer> PixelStage(MLContext context, ImageFolderOptions options, string outputColumnName)
    {
        IEstimator<ITransformer> pipeline = context.Transforms.ResizeImages(BitmapColumn, options.Width, options.Height, BitmapColumn,
            ImageResizingEstimator.ResizingKind.Fill);
        if (options.Grayscale) pipeline = pipeline.Append(context.Transforms.ConvertToGrayscale(BitmapColumn, BitmapColumn));
        var colors = options.Grayscale ? ImagePixelExtractingEstimator.ColorBits.Red : ImagePixelExtractingEstimator.ColorBits.Rgb;
        var normalization = options.Normalization ?? ChannelNormalization.Identity(options.Shape.Channels);
        return pipeline
            .Append(context.Transforms.ExtractPixels(PixelsColumn, BitmapColumn, colors, ImagePixelExtractingEstimator.ColorsOrder.ARGB,
                interleavePixelColors: false, scaleImage: 1f / 255f))
            .Append(context.Transforms.NormalizeChannels(outputColumnName, PixelsColumn, normalization))
            .Append(context.Transforms.DropColumns(BitmapColumn, PixelsColumn));
    }

    /// <summary>
    /// ML.NET ImageAnalytics 6.0 is built against SkiaSharp 3 and fails with MissingMethodException on SkiaSharp 2.88
    /// (which an app can still force). Say so up front instead of failing inside a cursor.
    /// </summary>
    internal static void CheckSkiaSharp()
    {
        var version = typeof(SkiaSharp.SKBitmap).Assembly.GetName().Version;
        if (version is { Major: < 3 })
            throw new InvalidOperationException(
                $"This process uses SkiaSharp {version}, but ML.NET ImageAnalytics 6.0 needs SkiaSharp 3.x (it calls APIs SkiaSharp 2.88 lacks). " +
                "Reference SkiaSharp 3.119.2 or later (the Gati.MLNet package pins 3.119.2).");
    }

    internal static IDataView Load(MLContext context, string directory, ImageFolderOptions options)
    {
        options.Validate();
        CheckSkiaSharp();
        var paths = LoadPaths(context, directory, options.Extensions);
        var loading = LoadStage(context, ImagePathColumnName);
        // Errors are given their file name right where images are decoded: later stages read ahead on other threads.
        // The same place checks each image's header size before ML.NET decodes (and allocates) it.
        var loaded = new ImageErrorContextView(loading.Fit(paths).Transform(paths), ImagePathColumnName,
            (BitmapColumn, path => CheckImageSize(path, options.MaxImagePixels)));
        var pixels = PixelStage(context, options, DefaultColumnNames.Image).Fit(loaded).Transform(loaded);
        return new ImageErrorContextView(pixels, pathColumn: null);
    }

    /// <summary>
    /// The files of an image folder (one sub-folder per class) as rows: <c>ImagePath</c> (absolute), <c>ClassName</c>
    /// (text) and <c>Label</c> (a key over the sub-folder names in ordinal order), class by class, or in one random order
    /// fixed by <paramref name="shuffleSeed"/>. Nothing is decoded.
    /// </summary>
    internal static IDataView LoadPaths(MLContext context, string directory, IReadOnlyList<string> extensionList, int? shuffleSeed = null)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Image folder '{directory}' does not exist.");
        var extensions = new HashSet<string>(extensionList, StringComparer.OrdinalIgnoreCase);
        var classes = Directory.GetDirectories(directory).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToArray();
        var files = new List<ImageFile>();
        foreach (var name in classes)
        {
            foreach (var file in Directory.EnumerateFiles(Path.Combine(directory, name), "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
                if (extensions.Contains(Path.GetExtension(file))) files.Add(new ImageFile { ImagePath = Path.GetFullPath(file), ClassName = name });
        }
        var used = files.Select(f => f.ClassName).Distinct().Count();
        if (used < 2)
            throw new ArgumentException($"Image folder '{directory}' needs at least two class sub-folders with images ({string.Join(", ", extensionList)}); found {used}.");
        if (shuffleSeed is { } seed)
        {
            // One fixed order for a seed, the same in every cursor and every process.
            var random = new Random(seed);
            for (var i = files.Count - 1; i > 0; i--)
            {
                var j = random.Next(i + 1);
                (files[i], files[j]) = (files[j], files[i]);
            }
        }
        var list = context.Data.LoadFromEnumerable(files);
        var keys = context.Data.LoadFromEnumerable(classes.Select(c => new ClassRow { ClassName = c }));
        return context.Transforms.Conversion.MapValueToKey(DefaultColumnNames.Label, nameof(ImageFile.ClassName), keyData: keys).Fit(list).Transform(list);
    }

    /// <summary>
    /// Writes <paramref name="rows"/> images of a dataset, starting at <paramref name="skip"/>, as PNG files into class
    /// sub-folders of <paramref name="directory"/> (<c>{class}/{index:D6}.png</c>, '/' in class names becoming '-'): the
    /// layout <see cref="LoadPaths"/> and ML.NET's image tutorials read. Each file is written atomically; files already
    /// there are kept, so an interrupted export resumes. Returns the number of files written now.
    /// </summary>
    internal static int Export(ImageRecordSource source, string directory, long skip, long rows, CancellationToken cancellation = default)
    {
        if (skip < 0 || rows < 0 || skip + rows > source.RowCount)
            throw new ArgumentOutOfRangeException(nameof(rows), $"{source.Name} has {source.RowCount} images; rows {skip}..{skip + rows} do not exist.");
        var shape = source.Shape;
        if (shape.Channels is not (1 or 3)) throw new ArgumentException($"{source.Name} has {shape.Channels} channels; PNG export writes 1 or 3.");
        var folders = source.ClassNames.Select(c => c.Replace('/', '-').Replace('\\', '-')).ToArray();
        foreach (var folder in folders) Directory.CreateDirectory(Path.Combine(directory, folder));
        var pixels = new byte[shape.Size];
        var written = 0;
        using var reader = source.Open(readImages: true);
        if (source.SupportsRandomAccess) reader.Seek(skip);
        else
            for (long i = 0; i < skip; i++) reader.ReadNext(pixels, out _);
        var plane = shape.Height * shape.Width;
        for (var row = skip; row < skip + rows; row++)
        {
            cancellation.ThrowIfCancellationRequested();
            reader.ReadNext(pixels, out var label);
            var path = Path.Combine(directory, folders[label], row.ToString("D6", System.Globalization.CultureInfo.InvariantCulture) + ".png");
            if (File.Exists(path)) continue;
            var info = new SKImageInfo(shape.Width, shape.Height, shape.Channels == 1 ? SKColorType.Gray8 : SKColorType.Rgba8888, SKAlphaType.Opaque);
            using var bitmap = new SKBitmap(info);
            var target = bitmap.GetPixelSpan();
            if (shape.Channels == 1)
            {
                pixels.AsSpan(0, plane).CopyTo(target);
            }
            else
            {
                for (var i = 0; i < plane; i++)
                {
                    target[i * 4] = pixels[i];
                    target[i * 4 + 1] = pixels[plane + i];
                    target[i * 4 + 2] = pixels[2 * plane + i];
                    target[i * 4 + 3] = 255;
                }
            }
            using var image = SKImage.FromBitmap(bitmap);
            using var png = image.Encode(SKEncodedImageFormat.Png, 100);
            ModelFormat.AtomicFile.WriteAllBytes(path, png.ToArray());
            written++;
        }
        return written;
    }

    /// <summary>
    /// Refuses an image whose header claims more than <paramref name="maxPixels"/> pixels, or (PNG, JPEG) more than its
    /// bytes can hold (<see cref="Inference.ImageDecodingLimits"/>, the checks <see cref="Inference.ImageDecoder"/> makes).
    /// Files SkiaSharp cannot read are left to ML.NET's loader, whose error the caller names.
    /// </summary>
    internal static void CheckImageSize(string path, long maxPixels)
    {
        using var stream = File.OpenRead(path);
        var fileBytes = stream.Length;
        using var codec = SKCodec.Create(stream);
        if (codec is null) return;
        var limits = new Inference.ImageDecodingLimits { MaxPixels = maxPixels, MaxPixelsSetting = "ImageFolderOptions.MaxImagePixels" };
        if (limits.Problem(codec.EncodedFormat, codec.Info.Width, codec.Info.Height, fileBytes) is { } problem)
            throw new DatasetFormatException(path, problem);
    }

    private sealed class ImageFile
    {
        public string ImagePath { get; set; } = "";

        public string ClassName { get; set; } = "";
    }

    private sealed class ClassRow
    {
        public string ClassName { get; set; } = "";
    }
}
