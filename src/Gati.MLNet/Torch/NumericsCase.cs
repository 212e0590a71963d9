using System.Globalization;

namespace Gati.MLNet.Torch;

/// <summary>
/// One operation at one shape, as a network really runs it in training: the self-check computes its forward pass and
/// the gradients of its input and weights in float32 (the kernels training uses) and in float64 (a different kernel
/// path), and compares the two.
/// </summary>
/// <param name="Operation">What runs.</param>
/// <param name="Batch">Rows per batch (the fault seen on AVX-512 depends on it).</param>
/// <param name="InChannels">Input channels (features for <see cref="NumericsOperation.Linear"/>).</param>
/// <param name="OutChannels">Output channels (features for Linear; equal to the input for BatchNorm2d).</param>
/// <param name="Height">Input height (1 for Linear).</param>
/// <param name="Width">Input width (1 for Linear).</param>
/// <param name="Kernel">Convolution kernel size.</param>
/// <param name="Stride">Convolution stride.</param>
public sealed record NumericsCase(NumericsOperation Operation, int Batch, int InChannels, int OutChannels, int Height = 1, int Width = 1, int Kernel = 1, int Stride = 1)
{
    /// <summary>A convolution of <paramref name="inChannels"/> to <paramref name="outChannels"/> channels on an input of height x width.</summary>
    public static NumericsCase Convolution(int batch, int inChannels, int outChannels, int height, int width, int kernel, int stride) =>
        new(NumericsOperation.Conv2d, batch, inChannels, outChannels, height, width, kernel, stride);

    /// <summary>Training-mode batch normalisation of <paramref name="channels"/> channels.</summary>
    public static NumericsCase BatchNorm(int batch, int channels, int height, int width) =>
        new(NumericsOperation.BatchNorm2d, batch, channels, channels, height, width);

    /// <summary>A linear layer of <paramref name="inFeatures"/> to <paramref name="outFeatures"/>.</summary>
    public static NumericsCase Linear(int batch, int inFeatures, int outFeatures) =>
        new(NumericsOperation.Linear, batch, inFeatures, outFeatures);

    /// <summary>A compact, parseable form, e.g. <c>conv2d:b64:1x28x28-&gt;8:k3s1</c>.</summary>
    public override string ToString() => Operation switch
    {
        NumericsOperation.Conv2d => string.Create(CultureInfo.InvariantCulture, $"conv2d:b{Batch}:{InChannels}x{Height}x{Width}->{OutChannels}:k{Kernel}s{Stride}"),
        NumericsOperation.BatchNorm2d => string.Create(CultureInfo.InvariantCulture, $"batchnorm2d:b{Batch}:{InChannels}x{Height}x{Width}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"linear:b{Batch}:{InChannels}->{OutChannels}"),
    };

    /// <summary>Reads the form written by <see cref="ToString"/>.</summary>
    public static NumericsCase Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split(':');
        int Int(string s) => int.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture);
        try
        {
            var batch = Int(parts[1].TrimStart('b'));
            switch (parts[0])
            {
                case "conv2d" when parts.Length == 4:
                {
                    var io = parts[2].Split("->");
                    var chw = io[0].Split('x');
                    var ks = parts[3].TrimStart('k').Split('s');
                    return Convolution(batch, Int(chw[0]), Int(io[1]), Int(chw[1]), Int(chw[2]), Int(ks[0]), Int(ks[1]));
                }
                case "batchnorm2d" when parts.Length == 3:
                {
                    var chw = parts[2].Split('x');
                    return BatchNorm(batch, Int(chw[0]), Int(chw[1]), Int(chw[2]));
                }
                case "linear" when parts.Length == 3:
                {
                    var io = parts[2].Split("->");
                    return Linear(batch, Int(io[0]), Int(io[1]));
                }
            }
        }
        catch (Exception ex) when (ex is FormatException or OverflowException or IndexOutOfRangeException)
        {
            throw new FormatException($"'{text}' is not a numerics check case.", ex);
        }
        throw new FormatException($"'{text}' is not a numerics check case.");
    }
}
