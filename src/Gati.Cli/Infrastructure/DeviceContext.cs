namespace Gati.Cli.Infrastructure;

/// <summary>The <see cref="MLContext"/> a command works in: seeded, with its TorchSharp networks placed on one device.</summary>
internal static class DeviceContext
{
    /// <summary>
    /// A context whose loaded and trained networks run on <paramref name="device"/> (auto, cpu, cuda or cuda:N; see
    /// <see cref="DeviceOptions.ConfigureContext"/>), seeded with <paramref name="seed"/> (null: ML.NET's random seed).
    /// </summary>
    public static MLContext Create(string device, int? seed = 0)
    {
        var context = new MLContext(seed);
        DeviceOptions.ConfigureContext(context, device);
        return context;
    }
}
