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

    /// <summary>
    /// Largest image decoded, in pixels (width x height from the image's header, checked before decoding); 0: per model,
    /// the larger of 2048 x 2048 and 64 times the model's input (<see cref="Gati.MLNet.Inference.ImageDecodingLimits.ForInput"/>).
    /// </summary>
    public long MaxImagePixels { get; set; }

    /// <summary>
    /// Request bodies decoded at once; the others wait their turn (each decode holds up to 4 bytes per pixel of
    /// <see cref="MaxImagePixels"/>). 0: the processor count.
    /// </summary>
    public int MaxConcurrentDecodes { get; set; }

    /// <summary>
    /// On shutdown, seconds to keep serving with /health at 503 and <c>Connection: close</c> on every response before
    /// the server stops (see <see cref="ShutdownDrain"/>); 0 stops at once. Keep it below the host's shutdown timeout
    /// (30 s by default), and at least as long as a load balancer takes to notice the failing health check.
    /// </summary>
    public double DrainSeconds { get; set; } = 2;
}
