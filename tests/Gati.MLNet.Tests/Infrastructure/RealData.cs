using Gati.MLNet.Data;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>The real Fashion-MNIST, as installed by Debian's dataset-fashion-mnist (.ci/run installs it).</summary>
public static class RealData
{
    public static string FashionMnistDirectory
    {
        get
        {
            var dir = Environment.GetEnvironmentVariable("GATI_FASHION_MNIST_DIR") ?? FashionMnist.DefaultDirectory;
            if (!File.Exists(Path.Combine(dir, "t10k-labels-idx1-ubyte.gz")) && !File.Exists(Path.Combine(dir, "t10k-labels-idx1-ubyte")))
                throw new InvalidOperationException(
                    $"Real Fashion-MNIST not found in {dir}: install it with 'apt-get install dataset-fashion-mnist' (done by .ci/run), or set GATI_FASHION_MNIST_DIR.");
            return dir;
        }
    }

    /// <summary>The first <paramref name="count"/> Fashion-MNIST test images as raw 0-255 pixels, row by row.</summary>
    public static byte[][] FashionMnistTestPixels(int count)
    {
        var context = new MLContext(0);
        var test = context.Data.TakeRows(context.Data.LoadFashionMnist(DatasetSplit.Test, FashionMnistDirectory, ChannelNormalization.Identity(1)), count);
        return context.Data.CreateEnumerable<PixelRow>(test, reuseRowObject: false).Select(r => r.Image.Select(v => (byte)Math.Round(v * 255)).ToArray()).ToArray();
    }

    private sealed class PixelRow
    {
        [VectorType(784)]
        public float[] Image { get; set; } = [];
    }
}
