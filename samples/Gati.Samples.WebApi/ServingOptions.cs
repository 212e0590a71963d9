namespace Gati.Samples.WebApi;

/// <summary>The sample's own settings (section "Gati"); the pool's are under "Gati:Pool".</summary>
public sealed class ServingOptions
{
    /// <summary>The model zip to serve (gati demo writes out/demo/early-exit.zip). Relative paths are from the content root.</summary>
    public string ModelPath { get; set; } = "";

    /// <summary>Reload the model when the file changes.</summary>
    public bool WatchForChanges { get; set; } = true;

    /// <summary>Largest request body accepted, in bytes.</summary>
    public long MaxRequestBytes { get; set; } = 1 << 20;
}
