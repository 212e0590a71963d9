using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using TorchSharp;

namespace Gati.MLNet.Torch;

/// <summary>
/// Parses and resolves the device option accepted across Gati.MLNet: <c>auto</c>, <c>cpu</c>, <c>cuda</c> or
/// <c>cuda:N</c>.
/// </summary>
/// <remarks>
/// Resolution follows ML.NET's TorchSharp trainers and honours <see cref="MLContext.GpuDeviceId"/> and
/// <see cref="MLContext.FallbackToCpu"/>:
/// <list type="table">
/// <listheader><term>option</term><description>result</description></listheader>
/// <item><term>auto</term><description><c>cuda:GpuDeviceId</c> (or <c>cuda:0</c>) when CUDA is available, else CPU;
/// when GpuDeviceId is set, CUDA is absent and FallbackToCpu is false, an error.</description></item>
/// <item><term>cpu</term><description>CPU.</description></item>
/// <item><term>cuda</term><description><c>cuda:GpuDeviceId</c> or <c>cuda:0</c>; CPU if CUDA is absent and FallbackToCpu is true, else an error.</description></item>
/// <item><term>cuda:N</term><description>GPU N (N must exist); CPU if CUDA is absent and FallbackToCpu is true, else an error.</description></item>
/// </list>
/// </remarks>
public static class DeviceOptions
{
    /// <summary>The default option.</summary>
    public const string Auto = "auto";

    /// <summary>Checks an option's syntax without touching libtorch; throws <see cref="ArgumentException"/> when malformed.</summary>
    public static void Validate(string option, string? parameterName = null) => Parse(option, parameterName);

    /// <summary>Resolves an option against the current machine and an ML.NET environment's GPU settings.</summary>
    /// <param name="option">auto, cpu, cuda or cuda:N (case-insensitive).</param>
    /// <param name="environment">The ML.NET environment (an <see cref="MLContext"/>); null uses no GPU id and no fallback.</param>
    public static torch.Device Resolve(string option, IHostEnvironment? environment = null)
    {
        var (kind, index) = Parse(option, nameof(option));
        int? gpuId = null;
        var fallback = false;
        if (environment is IHostEnvironmentInternal settings)
        {
            gpuId = settings.GpuDeviceId;
            fallback = settings.FallbackToCpu;
        }
        return Resolve(kind, index, gpuId, fallback, option, TorchRuntime.IsCudaAvailable, TorchRuntime.CudaDeviceCount);
    }

    /// <summary>
    /// The device for a model loaded with <c>mlContext.Model.Load</c>, by ML.NET's rule: the GPU named by
    /// <see cref="MLContext.GpuDeviceId"/> when it is set (CPU instead if CUDA is absent and
    /// <see cref="MLContext.FallbackToCpu"/> is true, else an error), otherwise the CPU.
    /// Use <see cref="ConfigureContext"/> to express an auto/cpu/cuda option through those settings.
    /// </summary>
    public static torch.Device ResolveForLoadedModel(IHostEnvironment? environment)
    {
        if (environment is IHostEnvironmentInternal { GpuDeviceId: { } id } settings)
            return Resolve(DeviceKind.Cuda, id, id, settings.FallbackToCpu, $"cuda:{id} (MLContext.GpuDeviceId)",
                TorchRuntime.IsCudaAvailable, TorchRuntime.CudaDeviceCount);
        return torch.CPU;
    }

    /// <summary>
    /// Sets <see cref="MLContext.GpuDeviceId"/> and <see cref="MLContext.FallbackToCpu"/> from a device option, so
    /// that models loaded through this context run where the option says: auto = GPU 0 when CUDA is available,
    /// else CPU; cpu = CPU; cuda = GPU 0; cuda:N = GPU N (no fallback for cuda options).
    /// </summary>
    public static void ConfigureContext(MLContext context, string option)
    {
        ArgumentNullException.ThrowIfNull(context);
        var (kind, index) = Parse(option, nameof(option));
        switch (kind)
        {
            case DeviceKind.Cpu:
                context.GpuDeviceId = null;
                break;
            case DeviceKind.Auto:
                context.GpuDeviceId = TorchRuntime.IsCudaAvailable ? 0 : null;
                context.FallbackToCpu = true;
                break;
            default:
                context.GpuDeviceId = index ?? 0;
                context.FallbackToCpu = false;
                break;
        }
    }

    /// <summary>Resolution rules, separated from the machine for testing.</summary>
    internal static torch.Device Resolve(DeviceKind kind, int? index, int? gpuDeviceId, bool fallbackToCpu, string option,
        bool cudaAvailable, int cudaDeviceCount)
    {
        switch (kind)
        {
            case DeviceKind.Cpu:
                return torch.CPU;
            case DeviceKind.Auto:
                if (cudaAvailable)
                    return CudaDevice(gpuDeviceId ?? 0, cudaDeviceCount, option);
                if (gpuDeviceId is not null && !fallbackToCpu)
                    throw new InvalidOperationException(
                        $"MLContext.GpuDeviceId is {gpuDeviceId} but CUDA is not available ({DescribeWhyNoCuda()}), and MLContext.FallbackToCpu is false.");
                return torch.CPU;
            default:
                if (cudaAvailable)
                    return CudaDevice(index ?? gpuDeviceId ?? 0, cudaDeviceCount, option);
                if (fallbackToCpu)
                    return torch.CPU;
                throw new InvalidOperationException(
                    $"Device '{option}' requires CUDA, but CUDA is not available ({DescribeWhyNoCuda()}). " +
                    "Use --device cpu/auto, or set MLContext.FallbackToCpu = true to fall back to the CPU.");
        }
    }

    private static torch.Device CudaDevice(int index, int count, string option)
    {
        if (index < 0 || index >= count)
            throw new ArgumentOutOfRangeException(nameof(option), $"Device '{option}' asks for GPU {index}, but {count} CUDA device(s) are visible (0..{count - 1}).");
        return new torch.Device(DeviceType.CUDA, index);
    }

    private static string DescribeWhyNoCuda()
    {
        try
        {
            return $"libtorch loaded: {TorchRuntime.Source}";
        }
        catch (InvalidOperationException ex)
        {
            return ex.Message;
        }
    }

    internal enum DeviceKind
    {
        Auto,
        Cpu,
        Cuda,
    }

    internal static (DeviceKind Kind, int? Index) Parse(string option, string? parameterName = null)
    {
        if (string.IsNullOrWhiteSpace(option))
            throw new ArgumentException("Device must be auto, cpu, cuda or cuda:N (got an empty value).", parameterName);
        var text = option.Trim().ToLowerInvariant();
        switch (text)
        {
            case "auto": return (DeviceKind.Auto, null);
            case "cpu": return (DeviceKind.Cpu, null);
            case "cuda":
            case "gpu": return (DeviceKind.Cuda, null);
        }
        if (text.StartsWith("cuda:", StringComparison.Ordinal) &&
            int.TryParse(text.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out var index))
            return (DeviceKind.Cuda, index);
        throw new ArgumentException($"Device must be auto, cpu, cuda or cuda:N (got '{option}').", parameterName);
    }
}
