using Gati.MLNet.Data;

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
}
