using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Torch;

/// <summary>
/// Scalars that outlive the native calls they are passed to.
/// </summary>
/// <remarks>
/// TorchSharp 0.107 hands a <see cref="Scalar"/> to libtorch as a bare handle and frees it in the Scalar's finalizer.
/// A Scalar made by an implicit conversion (<c>tensor * 0.5</c>, <c>a + b</c>, whose <c>add</c> converts its alpha of
/// 1, <c>x.ge(threshold)</c>) is unreachable as soon as its handle has been read, so a garbage collection started by
/// another thread during the native call can finalize it and libtorch then reads freed memory: the process dies with
/// "Expected false to be true ... toFloat" or "Unknown scalar type", after minutes or hours, more often the more the
/// other threads allocate (a web server, a progress display). Gati therefore never lets TorchSharp convert a number
/// implicitly on a path that runs repeatedly: constants come from here (static, never collected), per-call values are
/// <c>using</c> locals (the call to Dispose at the end of the scope keeps them reachable until then), and SGD is
/// <see cref="SafeSgd"/>. <c>ScalarLifetimeTests</c> reproduces the crash and checks each path that used to have it.
/// </remarks>
public static class Scalars
{
    /// <summary>The integer 1 (valid as the alpha of integer and floating-point tensors alike).</summary>
    public static readonly Scalar One = 1.ToScalar();

    /// <summary><c>x += y</c> (in place) with a Scalar alpha that cannot be collected mid-call.</summary>
    public static Tensor PlusInPlace(this Tensor x, Tensor y) => x.add_(y, One);

    /// <summary><c>x + alpha * y</c> (out of place).</summary>
    public static Tensor PlusScaled(this Tensor x, Tensor y, double alpha)
    {
        using var a = alpha.ToScalar();
        return x.add(y, a);
    }

    /// <summary><c>x += alpha * y</c> (in place).</summary>
    public static Tensor PlusScaledInPlace(this Tensor x, Tensor y, double alpha)
    {
        using var a = alpha.ToScalar();
        return x.add_(y, a);
    }

    /// <summary><c>x * factor</c> (out of place).</summary>
    public static Tensor Times(this Tensor x, double factor)
    {
        using var f = factor.ToScalar();
        return x.mul(f);
    }

    /// <summary><c>x / divisor</c> (out of place).</summary>
    public static Tensor DividedBy(this Tensor x, double divisor)
    {
        using var d = divisor.ToScalar();
        return x.div(d);
    }

    /// <summary><c>x &gt;= threshold</c>, element-wise.</summary>
    public static Tensor AtLeast(this Tensor x, double threshold)
    {
        using var t = threshold.ToScalar();
        return x.ge(t);
    }

    /// <summary>
    /// A batch norm's forward without TorchSharp's implicit Scalars: in training, TorchSharp's <c>BatchNorm.forward</c>
    /// counts the batch with <c>num_batches_tracked.add_(1)</c>, whose Scalars a collection on another thread can free
    /// mid-call (seen as "argument alpha must not be a floating point number"). The same update here, with static
    /// Scalars; evaluation takes TorchSharp's path, which has none.
    /// </summary>
    public static Tensor Normalize(this TorchSharp.Modules.BatchNorm2d bn, Tensor input)
    {
        if (!bn.training || !bn.track_running_stats || bn.running_mean is null || bn.running_var is null) return bn.forward(input);
        bn.num_batches_tracked?.add_(One, One);
        // Momentum 0 or none means a cumulative average, as TorchSharp and PyTorch do.
        var factor = bn.momentum is { } m && m != 0 ? m : 1.0 / Math.Max(1, bn.num_batches_tracked?.item<long>() ?? 1);
        return nn.functional.batch_norm(input, bn.running_mean, bn.running_var, bn.weight, bn.bias, training: true, factor, bn.eps);
    }
}
