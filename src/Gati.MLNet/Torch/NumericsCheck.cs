using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Torch;

/// <summary>
/// The numerical self-check of the native runtime: each case's forward pass and gradients, computed on the CPU in
/// float32 and in float64 from the same inputs, must agree. Healthy kernels agree to about 1e-6 relative error; the
/// oneDNN AVX-512 fault seen on AMD Zen 5 gave 0.1-0.4 or non-finite values, in some repeats only.
/// </summary>
public static class NumericsCheck
{
    /// <summary>Largest accepted relative error (float32 accumulations of 10^5 terms stay far below it).</summary>
    public const double Tolerance = 1e-3;

    /// <summary>Runs every case <paramref name="repeats"/> times (the fault is not deterministic) on fresh random inputs.</summary>
    public static IReadOnlyList<NumericsCaseResult> Run(IEnumerable<NumericsCase> cases, int repeats = 3)
    {
        ArgumentNullException.ThrowIfNull(cases);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        var results = new List<NumericsCaseResult>();
        using var generator = new Generator(0x6a7);
        foreach (var numericsCase in cases)
        {
            var worst = 0.0;
            var worstOutput = "output";
            foreach (var (name, error) in RunCase(numericsCase, generator, repeats))
            {
                if (error > worst || double.IsNaN(error))
                {
                    worst = double.IsNaN(error) ? double.PositiveInfinity : error;
                    worstOutput = name;
                }
            }
            results.Add(new NumericsCaseResult(numericsCase, worst, worstOutput));
        }
        return results;
    }

    /// <summary>
    /// max |actual - reference| / max |reference|, computed in float64; positive infinity when either holds a value
    /// that is not finite or the shapes differ.
    /// </summary>
    public static double RelativeError(Tensor actual, Tensor reference)
    {
        ArgumentNullException.ThrowIfNull(actual);
        ArgumentNullException.ThrowIfNull(reference);
        using var scope = NewDisposeScope();
        if (!actual.shape.SequenceEqual(reference.shape)) return double.PositiveInfinity;
        var a = actual.detach().to(ScalarType.Float64);
        var r = reference.detach().to(ScalarType.Float64);
        if (!a.isfinite().all().item<bool>() || !r.isfinite().all().item<bool>()) return double.PositiveInfinity;
        var scale = r.abs().max().item<double>();
        var difference = a.PlusScaled(r, -1).abs().max().item<double>();
        return difference / Math.Max(scale, 1e-30);
    }

    /// <summary>
    /// Every output's error, for each of <paramref name="repeats"/> float32 evaluations of the same inputs against one
    /// float64 reference (the fault lies in the kernel, not the data, so fresh data per repeat would only cost time).
    /// </summary>
    private static List<(string Name, double Error)> RunCase(NumericsCase c, Generator generator, int repeats)
    {
        using var scope = NewDisposeScope();
        using var enableGrad = enable_grad();
        Tensor input, gradOutput;
        Tensor[] weights;
        switch (c.Operation)
        {
            case NumericsOperation.Conv2d:
                input = randn([c.Batch, c.InChannels, c.Height, c.Width], generator: generator);
                weights = [Affine(randn([c.OutChannels, c.InChannels, c.Kernel, c.Kernel], generator: generator), 1 / Math.Sqrt(c.InChannels * c.Kernel * c.Kernel), 0)];
                var outSize = (c.Height + 2 * (c.Kernel / 2) - c.Kernel) / c.Stride + 1;
                var outWidth = (c.Width + 2 * (c.Kernel / 2) - c.Kernel) / c.Stride + 1;
                gradOutput = randn([c.Batch, c.OutChannels, outSize, outWidth], generator: generator);
                break;
            case NumericsOperation.BatchNorm2d:
                input = Affine(randn([c.Batch, c.InChannels, c.Height, c.Width], generator: generator), 2, 0.5);
                weights = [Affine(rand([c.InChannels], generator: generator), 1, 0.5), randn([c.InChannels], generator: generator)];
                gradOutput = randn([c.Batch, c.InChannels, c.Height, c.Width], generator: generator);
                break;
            default:
                input = randn([c.Batch, c.InChannels], generator: generator);
                weights = [Affine(randn([c.OutChannels, c.InChannels], generator: generator), 1 / Math.Sqrt(c.InChannels), 0), randn([c.OutChannels], generator: generator)];
                gradOutput = randn([c.Batch, c.OutChannels], generator: generator);
                break;
        }

        var names = c.Operation == NumericsOperation.Conv2d
            ? new[] { "output", "input gradient", "weight gradient" }
            : new[] { "output", "input gradient", "weight gradient", "bias gradient" };
        var input64 = input.to(ScalarType.Float64);
        var gradOutput64 = gradOutput.to(ScalarType.Float64);
        var weights64 = weights.Select(w => w.to(ScalarType.Float64)).ToArray();
        Tensor[] reference;
        Tensor? samples = null;
        if (c.Operation == NumericsOperation.Conv2d)
        {
            // A convolution's output and input gradient for one image depend on that image only, so the float64
            // reference of those two covers a few images spread over the batch (a blocked kernel's first, middle and
            // last blocks); the weight gradient sums over the whole batch and is compared in full.
            samples = tensor(new long[] { 0, 1, c.Batch / 2, c.Batch - 2, c.Batch - 1 }.Where(i => i >= 0 && i < c.Batch).Distinct().Order().ToArray());
            var partial = Evaluate(c, input64.index_select(0, samples), weights64, gradOutput64.index_select(0, samples), reference: true);
            reference = [partial[0], partial[1], ConvolutionWeightGradient(input64, gradOutput64, c)];
        }
        else
        {
            reference = Evaluate(c, input64, weights64, gradOutput64, reference: true);
        }

        var errors = new List<(string Name, double Error)>();
        for (var repeat = 0; repeat < repeats; repeat++)
        {
            using var repeatScope = NewDisposeScope();
            var single = Evaluate(c, input, weights, gradOutput, reference: false);
            for (var i = 0; i < names.Length; i++)
            {
                var actual = single[i];
                if (samples is not null && i < 2)
                {
                    if (!actual.isfinite().all().item<bool>())
                    {
                        errors.Add((names[i], double.PositiveInfinity));
                        continue;
                    }
                    actual = actual.index_select(0, samples);
                }
                errors.Add((names[i], RelativeError(actual, reference[i])));
            }
        }
        return errors;
    }

    /// <summary>
    /// Forward, then backward of <c>sum(output * gradOutput)</c>: returns the output and every gradient. The float64
    /// reference convolution is an explicit unfold and matrix product, so it shares no kernel with the float32 one
    /// (libtorch would send a float64 convolution to NNPACK, which warns on every call on CPUs it does not support).
    /// </summary>
    private static Tensor[] Evaluate(NumericsCase c, Tensor input, Tensor[] weights, Tensor gradOutput, bool reference)
    {
        var x = input.detach().requires_grad_(true);
        var w = weights.Select(t => t.detach().requires_grad_(true)).ToArray();
        var y = c.Operation switch
        {
            NumericsOperation.Conv2d when reference => UnfoldedConvolution(x, w[0], c, gradOutput.shape),
            NumericsOperation.Conv2d => nn.functional.conv2d(x, w[0], strides: [c.Stride, c.Stride], padding: [c.Kernel / 2, c.Kernel / 2]),
            NumericsOperation.BatchNorm2d => nn.functional.batch_norm(x, zeros([c.InChannels], x.dtype), ones([c.InChannels], x.dtype), w[0], w[1], training: true),
            _ => nn.functional.linear(x, w[0], w[1]),
        };
        y.backward([gradOutput]);
        return [y.detach(), x.grad!, .. w.Select(t => t.grad!)];
    }

    private static Tensor UnfoldedConvolution(Tensor x, Tensor weight, NumericsCase c, long[] outputShape)
    {
        var columns = nn.functional.unfold(x, c.Kernel, padding: c.Kernel / 2, stride: c.Stride); // [N, Cin*k*k, L]
        var product = weight.reshape(c.OutChannels, -1).matmul(columns);                           // [N, Cout, L]
        return product.reshape(outputShape);
    }

    /// <summary>
    /// dW[o, i, a, b] = sum over images and output pixels of gradOutput[n, o, y, x] * paddedInput[n, i, s*y + a, s*x + b]:
    /// one matrix product per kernel offset, without autograd.
    /// </summary>
    private static Tensor ConvolutionWeightGradient(Tensor input, Tensor gradOutput, NumericsCase c)
    {
        var pad = c.Kernel / 2;
        var padded = nn.functional.pad(input, [pad, pad, pad, pad]);
        var outHeight = gradOutput.shape[2];
        var outWidth = gradOutput.shape[3];
        var gradient = gradOutput.permute(1, 0, 2, 3).reshape(c.OutChannels, -1);  // [Cout, N*L]
        var offsets = new List<Tensor>();
        for (var a = 0; a < c.Kernel; a++)
        {
            for (var b = 0; b < c.Kernel; b++)
            {
                var window = padded.slice(2, a, a + c.Stride * (outHeight - 1) + 1, c.Stride)
                    .slice(3, b, b + c.Stride * (outWidth - 1) + 1, c.Stride);        // [N, Cin, Ho, Wo]
                offsets.Add(gradient.matmul(window.permute(1, 0, 2, 3).reshape(c.InChannels, -1).t()));
            }
        }
        return stack(offsets, 2).reshape(c.OutChannels, c.InChannels, c.Kernel, c.Kernel);
    }

    /// <summary><c>t * factor + offset</c> in place, with Scalars that stay alive for the whole native call.</summary>
    private static Tensor Affine(Tensor t, double factor, double offset)
    {
        using var f = factor.ToScalar();
        using var o = offset.ToScalar();
        return t.mul_(f).add_(o);
    }
}
