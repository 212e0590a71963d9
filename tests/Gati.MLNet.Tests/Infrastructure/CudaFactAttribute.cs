using Gati.MLNet.Torch;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>A fact that runs only where libtorch sees a CUDA device; skipped (not failed) elsewhere, e.g. in CI.</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (!CudaPresent.Value) Skip = "CUDA is not available on this machine (this build's libtorch: " + Source() + ").";
    }

    private static readonly Lazy<bool> CudaPresent = new(() =>
    {
        try
        {
            return TorchRuntime.IsCudaAvailable;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    });

    private static string Source()
    {
        try
        {
            return TorchRuntime.Source;
        }
        catch (InvalidOperationException ex)
        {
            return ex.Message;
        }
    }
}
