using Gati.MLNet.Data;
using Gati.MLNet.Models;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Gati.MLNet.Torch;

/// <summary>
/// The numerical self-check of the native runtime that guards training (docs/torchsharp-runtime.md#cpu-numerics).
/// </summary>
/// <remarks>
/// <para>Some CPUs get wrong results from libtorch's oneDNN kernels: on an AMD Zen 5 with AVX-512, the input gradient of
/// small stride-1 convolutions came out NaN or wrong, in some runs only, so training diverged. Before the first training
/// step of a network on the CPU, every Gati trainer checks the convolutions, batch norms or linear layers that this
/// network uses, at its batch size, forward and backward, in float32 against float64. A CPU that passes is left alone.
/// One that fails is fixed for the process (oneDNN capped to AVX2, or its kernels switched off) and logged once; if
/// nothing helps, training is refused with <see cref="NativeNumericsException"/>.</para>
/// <para>Users decide: <c>DNNL_MAX_CPU_ISA</c> set before the process starts is never overridden, and
/// <c>GATI_NUMERICS_CHECK=off</c> (or <see cref="Enabled"/> = false) skips the check.</para>
/// </remarks>
public static class NativeNumerics
{
    /// <summary>The environment variable oneDNN reads its instruction-set limit from (ONEDNN_MAX_CPU_ISA is its alias).</summary>
    public const string InstructionSetVariable = "DNNL_MAX_CPU_ISA";

    /// <summary>
    /// The caps tried, fastest first, when the full instruction set is wrong: the first under which every case is right
    /// is applied. (On the AMD Zen 5 VM we measured, AVX2 kernels were wrong for convolutions of 4 or fewer channels too;
    /// AVX and SSE41 were right everywhere.)
    /// </summary>
    public static IReadOnlyList<string> CapLadder { get; } = ["AVX2", "AVX", "SSE41"];

    /// <summary>
    /// Stride-1 convolutions with few channels, where the oneDNN fault showed first: a cap is chosen only if these are
    /// right too, so that a network trained later in the same process is not left with a cap that is wrong for it.
    /// </summary>
    public static IReadOnlyList<NumericsCase> FragileCases { get; } =
    [
        NumericsCase.Convolution(2, 2, 3, 6, 6, 3, 1),
        NumericsCase.Convolution(32, 1, 4, 28, 28, 3, 1),
        NumericsCase.Convolution(32, 4, 4, 28, 28, 3, 1),
        NumericsCase.Convolution(64, 8, 8, 28, 28, 3, 1),
        NumericsCase.Convolution(16, 3, 8, 32, 32, 3, 1),
    ];

    /// <summary>The environment variable that switches the check off (<c>off</c>) or on (<c>auto</c>, the default).</summary>
    public const string CheckVariable = "GATI_NUMERICS_CHECK";

    /// <summary>Repeats of every case: the fault is not deterministic.</summary>
    public const int Repeats = 3;

    private static readonly NativeNumericsPolicy Policy = new(new OneDnnRuntime(), () => FileVerdictStore.ForThisMachine(OneDnnRuntime.NativeIdentity()))
    {
        Enabled = !string.Equals(Environment.GetEnvironmentVariable(CheckVariable)?.Trim(), "off", StringComparison.OrdinalIgnoreCase),
    };

    /// <summary>Raised once for every check that ran (and once when the check is off), with what was found and done.</summary>
    public static event EventHandler<NativeNumericsReport>? Checked;

    /// <summary>False skips the check (default: true unless <c>GATI_NUMERICS_CHECK=off</c>).</summary>
    public static bool Enabled
    {
        get => Policy.Enabled;
        set => Policy.Enabled = value;
    }

    /// <summary>The most recent report of this process, or null before the first check.</summary>
    public static NativeNumericsReport? LastReport => Policy.LastReport;

    /// <summary>
    /// Checks the operations a <see cref="ResNet"/> of this configuration trains with at this batch size (its stem, its
    /// first stage and the first block of its second stage), unless done before. Call it first in a process that will
    /// run other TorchSharp work before it trains: capping oneDNN is possible only before its first use. Trainers call
    /// it themselves.
    /// </summary>
    /// <returns>The report of the check, or null when these cases were checked before.</returns>
    /// <exception cref="NativeNumericsException">The runtime computes wrong results and nothing made it right.</exception>
    public static NativeNumericsReport? PrepareForTraining(ResNetConfig config, int batchSize) =>
        EnsureSound(ForResNet(config, batchSize));

    /// <summary>Checks a default case set (the smallest Fashion-MNIST ResNet at batch 64) before any other TorchSharp work.</summary>
    public static NativeNumericsReport? PrepareForTraining() =>
        PrepareForTraining(new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 28, 28), 10, 8), 64);

    /// <summary>Checks <paramref name="cases"/> on the CPU unless done before; does nothing for a CUDA device.</summary>
    /// <exception cref="NativeNumericsException">The runtime computes wrong results and nothing made it right.</exception>
    public static NativeNumericsReport? EnsureSound(IReadOnlyList<NumericsCase> cases, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(cases);
        if (device is not null && device.type != TorchSharp.DeviceType.CPU) return null;
        TorchRuntime.EnsureInitialized();
        var report = Policy.Ensure(cases);
        if (report is not null) Checked?.Invoke(null, report);
        return report;
    }

    /// <summary>What trainers call before their first step: the check, with its report logged to the ML.NET channel once.</summary>
    internal static void EnsureSoundForTraining(IHost host, IReadOnlyList<NumericsCase> cases, Device device)
    {
        if (EnsureSound(cases, device) is not { } report) return;
        using var channel = host.Start("Native numerics check");
        if (report.Changed || report.Action == NativeNumericsAction.CheckDisabled) channel.Warning(report.Summary);
        else channel.Info(report.Summary);
    }

    /// <summary>The cases of a ResNet: stem, first stage, and the first (downsampling) block of the second stage.</summary>
    public static IReadOnlyList<NumericsCase> ForResNet(ResNetConfig config, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var spec = ResNetSpec.For(config.Architecture);
        int c = config.InputShape.Channels, h = config.InputShape.Height, w = config.InputShape.Width, width = config.BaseWidth;
        int h2 = (h - 1) / 2 + 1, w2 = (w - 1) / 2 + 1;
        var cases = new List<NumericsCase>
        {
            NumericsCase.Convolution(batchSize, c, width, h, w, 3, 1),
            NumericsCase.BatchNorm(batchSize, width, h, w),
        };
        if (!spec.Bottleneck)
        {
            cases.Add(NumericsCase.Convolution(batchSize, width, width, h, w, 3, 1));
            cases.Add(NumericsCase.Convolution(batchSize, width, 2 * width, h, w, 3, 2));
            cases.Add(NumericsCase.Convolution(batchSize, 2 * width, 2 * width, h2, w2, 3, 1));
            cases.Add(NumericsCase.Convolution(batchSize, width, 2 * width, h, w, 1, 2));
            cases.Add(NumericsCase.BatchNorm(batchSize, 2 * width, h2, w2));
        }
        else
        {
            var e = spec.Expansion;
            cases.Add(NumericsCase.Convolution(batchSize, width, width, h, w, 1, 1));
            cases.Add(NumericsCase.Convolution(batchSize, width, width, h, w, 3, 1));
            cases.Add(NumericsCase.Convolution(batchSize, width, e * width, h, w, 1, 1));
            cases.Add(NumericsCase.BatchNorm(batchSize, e * width, h, w));
            cases.Add(NumericsCase.Convolution(batchSize, e * width, 2 * width, h, w, 1, 1));
            cases.Add(NumericsCase.Convolution(batchSize, 2 * width, 2 * width, h, w, 3, 2));
            cases.Add(NumericsCase.Convolution(batchSize, e * width, 2 * e * width, h, w, 1, 2));
        }
        return cases.Distinct().ToList();
    }

    /// <summary>
    /// The cases of fully connected networks (predictors, selectors): a linear layer per input width, at the batch
    /// size. Widths above 1024 are checked at 1024: the same matrix kernels, at a fraction of the float64 cost.
    /// </summary>
    public static IReadOnlyList<NumericsCase> ForLinear(int batchSize, IEnumerable<int> inputWidths, int outputWidth)
    {
        ArgumentNullException.ThrowIfNull(inputWidths);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        return inputWidths.Select(width => NumericsCase.Linear(batchSize, Math.Clamp(width, 1, 1024), Math.Max(outputWidth, 1))).Distinct().ToList();
    }
}
