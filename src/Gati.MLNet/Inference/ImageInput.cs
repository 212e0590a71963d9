namespace Gati.MLNet.Inference;

/// <summary>
/// One image for a Gati model: the input type of <see cref="EarlyExitPredictionEngine{TInput, TOutput}"/> and of
/// ML.NET's <c>CreatePredictionEngine</c>, and a row type for reading images out of a data view
/// (<c>mlContext.Data.CreateEnumerable&lt;ImageInput&gt;(test, reuseRowObject: false)</c>).
/// </summary>
/// <remarks>
/// <see cref="Image"/> holds the normalised planar pixels [C, H, W], exactly as the dataset loaders' <c>Image</c> column
/// does. For raw pixels, scale them to [0, 1] and apply the model's <c>InputNormalization</c> (see <see cref="FromPixels"/>).
/// </remarks>
public sealed class ImageInput
{
    /// <summary>Normalised planar pixels, C*H*W values.</summary>
    public float[] Image { get; set; } = [];

    /// <summary>
    /// An input from raw planar pixels scaled to [0, 1]: normalised with <paramref name="normalization"/> (the model's
    /// <see cref="EarlyExitPredictionEngine{TInput, TOutput}.InputNormalization"/>), or taken as they are when it is null.
    /// </summary>
    /// <param name="pixels">Planar pixels [C, H, W] in [0, 1].</param>
    /// <param name="normalization">The normalisation the model was trained with, or null.</param>
    public static ImageInput FromPixels(ReadOnlySpan<float> pixels, Data.ChannelNormalization? normalization)
    {
        var image = new float[pixels.Length];
        if (normalization is null) pixels.CopyTo(image);
        else normalization.Normalize(pixels, image);
        return new ImageInput { Image = image };
    }
}
