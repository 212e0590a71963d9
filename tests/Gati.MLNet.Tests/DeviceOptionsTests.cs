using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Torch;
using Microsoft.ML;
using TorchSharp;

namespace Gati.MLNet.Tests;

public sealed class DeviceOptionsTests
{
    [Theory]
    [InlineData("auto")]
    [InlineData("CPU")]
    [InlineData("cuda")]
    [InlineData(" cuda:3 ")]
    public void Validate_KnownForms_AreAccepted(string option) => DeviceOptions.Validate(option);

    [Theory]
    [InlineData("")]
    [InlineData("tpu")]
    [InlineData("cuda:")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:x")]
    public void Validate_UnknownForms_AreRejectedWithTheValue(string option)
    {
        var error = Assert.Throws<ArgumentException>(() => DeviceOptions.Validate(option));
        Assert.Contains("auto, cpu, cuda or cuda:N", error.Message);
    }

    private static torch.Device Resolve(string option, int? gpuId, bool fallback, bool cuda, int count = 0)
    {
        var (kind, index) = DeviceOptions.Parse(option);
        return DeviceOptions.Resolve(kind, index, gpuId, fallback, option, cuda, count);
    }

    [Fact]
    public void Resolve_AutoWithoutCuda_IsCpu() => Assert.Equal(DeviceType.CPU, Resolve("auto", null, false, cuda: false).type);

    [Fact]
    public void Resolve_AutoWithCuda_UsesGpuDeviceIdOrZero()
    {
        Assert.Equal(0, Resolve("auto", null, false, cuda: true, count: 2).index);
        Assert.Equal(1, Resolve("auto", 1, false, cuda: true, count: 2).index);
    }

    [Fact]
    public void Resolve_AutoWithGpuIdButNoCudaAndNoFallback_Throws()
    {
        var error = Assert.Throws<InvalidOperationException>(() => Resolve("auto", 0, fallback: false, cuda: false));
        Assert.Contains("FallbackToCpu is false", error.Message);
        Assert.Equal(DeviceType.CPU, Resolve("auto", 0, fallback: true, cuda: false).type);
    }

    [Fact]
    public void Resolve_CudaRequiredButAbsent_ThrowsUnlessFallback()
    {
        var error = Assert.Throws<InvalidOperationException>(() => Resolve("cuda:0", null, fallback: false, cuda: false));
        Assert.Contains("requires CUDA", error.Message);
        Assert.Equal(DeviceType.CPU, Resolve("cuda", null, fallback: true, cuda: false).type);
    }

    [Fact]
    public void Resolve_CudaIndexBeyondVisibleDevices_Throws()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => Resolve("cuda:2", null, false, cuda: true, count: 2));
        Assert.Contains("2 CUDA device(s)", error.Message);
    }

    [Fact]
    public void Resolve_ExplicitIndexWinsOverGpuDeviceId() => Assert.Equal(1, Resolve("cuda:1", 0, false, cuda: true, count: 2).index);

    [Fact]
    public void Resolve_OnThisMachine_CpuAlwaysWorksAndCudaMatchesLibtorch()
    {
        var context = new MLContext();
        Assert.Equal(DeviceType.CPU, DeviceOptions.Resolve("cpu", context).type);
        if (!TorchRuntime.IsCudaAvailable)
            Assert.Throws<InvalidOperationException>(() => DeviceOptions.Resolve("cuda", context));
        context.FallbackToCpu = true;
        Assert.Equal(TorchRuntime.IsCudaAvailable ? DeviceType.CUDA : DeviceType.CPU, DeviceOptions.Resolve("cuda", context).type);
    }

    [Fact]
    public void ConfigureContext_MapsOptionsToMLContextGpuSettings()
    {
        var context = new MLContext();
        DeviceOptions.ConfigureContext(context, "cuda:1");
        Assert.Equal(1, context.GpuDeviceId);
        Assert.False(context.FallbackToCpu);
        DeviceOptions.ConfigureContext(context, "cpu");
        Assert.Null(context.GpuDeviceId);
        Assert.Equal(DeviceType.CPU, DeviceOptions.ResolveForLoadedModel(context).type);
    }

    [CudaFact]
    public void Resolve_Cuda_OnAGpuMachine_GivesCudaDevice()
    {
        var device = DeviceOptions.Resolve("cuda", new MLContext());
        Assert.Equal(DeviceType.CUDA, device.type);
        using var t = torch.ones(3, device: device);
        Assert.Equal(3f, t.sum().cpu().item<float>());
    }
}
