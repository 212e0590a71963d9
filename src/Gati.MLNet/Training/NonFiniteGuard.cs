using System.Globalization;
using Gati.MLNet.Torch;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>
/// Stops training at the first non-finite loss or gradient, between backward and the optimizer step, so that no NaN
/// ever reaches the weights, a checkpoint or a model file.
/// </summary>
internal static class NonFiniteGuard
{
    /// <summary>
    /// Throws <see cref="TrainingDivergedException"/> when the loss or any gradient of <paramref name="module"/> holds
    /// NaN or infinity. One host synchronisation per step: each gradient is summed in float64 on its device, and
    /// only the finiteness of all sums together is read back.
    /// </summary>
    public static void Check(Tensor loss, nn.Module module, string network, int epoch, int batch, double learningRate)
    {
        using var scope = NewDisposeScope();
        var gradients = module.named_parameters().Where(p => p.parameter.grad is not null).ToList();
        var sums = gradients.Select(p => p.parameter.grad!.sum(ScalarType.Float64)).Append(loss.detach().to(ScalarType.Float64).sum()).ToList();
        var finite = stack(sums).isfinite();
        if (finite.all().item<bool>()) return;

        var flags = finite.cpu().data<bool>().ToArray();
        var what = !flags[^1]
            ? string.Create(CultureInfo.InvariantCulture, $"the loss is {loss.detach().cpu().to(ScalarType.Float64).item<double>()}")
            : $"the gradient of '{gradients[Array.IndexOf(flags, false)].name}' holds NaN or infinite values";
        var runtime = NativeNumerics.LastReport is { } report ? $"the native numerics check of this process: {report.Action}" : "no native numerics check ran in this process";
        var rate = learningRate.ToString("G4", CultureInfo.InvariantCulture);
        throw new TrainingDivergedException(
            $"Training of the {network} diverged at epoch {epoch}, batch {batch}: {what}. The step was not applied and nothing of this epoch " +
            $"was saved (an earlier checkpoint stays valid). Likely causes: a learning rate too high for this network (it was {rate}; " +
            $"try one ten times lower), or inputs that are not normalised; or a native runtime that computes wrong results on this CPU ({runtime}; " +
            "docs/torchsharp-runtime.md#cpu-numerics).", network, epoch, batch);
    }
}
