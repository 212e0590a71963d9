using TorchSharp;

namespace Gati.Cli.Infrastructure;

/// <summary>--device, --threads and --libtorch-dir, shared by every command that runs a network.</summary>
internal sealed class RuntimeArguments
{
    public Option<string> Device { get; } = new("--device")
    {
        Description = "Where networks run: auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
        DefaultValueFactory = _ => DeviceOptions.Auto,
    };

    public Option<int?> Threads { get; } = new Option<int?>("--threads")
    {
        Description = "CPU threads for libtorch (default: libtorch's own choice, usually the core count).",
    }.AtLeast(1);

    public Option<string?> LibTorchDir { get; } = new("--libtorch-dir")
    {
        Description = "Load libtorch from this folder (e.g. a PyTorch install's torch/lib, for CUDA) instead of the bundled one; " +
                      "needs a build with -p:TorchBackend=none. Same as the GATI_LIBTORCH_DIR environment variable.",
    };

    public void AddTo(Command command)
    {
        Device.Validators.Add(result =>
        {
            try
            {
                DeviceOptions.Validate(result.GetValueOrDefault<string>());
            }
            catch (ArgumentException ex)
            {
                result.AddError(ex.Message);
            }
        });
        command.Options.Add(Device);
        command.Options.Add(Threads);
        command.Options.Add(LibTorchDir);
    }

    /// <summary>Applies --libtorch-dir and --threads; call before any TorchSharp use.</summary>
    public void Apply(ParseResult result)
    {
        if (result.GetValue(LibTorchDir) is { } dir) TorchRuntime.LibTorchDirectory = dir;
        TorchRuntime.EnsureInitialized();
        if (result.GetValue(Threads) is { } threads) torch.set_num_threads(threads);
    }
}
