using Microsoft.Extensions.Options;

namespace Gati.Samples.WebApi;

/// <summary>
/// Bounds how many request bodies are decoded at once (<see cref="ServingOptions.MaxConcurrentDecodes"/>): each decode
/// holds its image's pixels, so a burst of large images waits for a slot instead of taking memory all together.
/// </summary>
public sealed class DecodingGate
{
    // Never disposed: a SemaphoreSlim whose wait handle is never asked for holds nothing to free, and a request that
    // finishes while the host shuts down must still be able to give its slot back.
    private readonly SemaphoreSlim _slots;
    private int _waiting;

    /// <param name="options">The sample's settings.</param>
    public DecodingGate(IOptions<ServingOptions> options)
    {
        var configured = options.Value.MaxConcurrentDecodes;
        Slots = configured > 0 ? configured : Environment.ProcessorCount;
        _slots = new SemaphoreSlim(Slots, Slots);
    }

    /// <summary>Decodes allowed at once.</summary>
    public int Slots { get; }

    /// <summary>Slots free now.</summary>
    public int Free => _slots.CurrentCount;

    /// <summary>Requests waiting for a slot now.</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Waits for a slot; disposing the lease (any number of times) gives it back.</summary>
    public async Task<Lease> EnterAsync(CancellationToken cancellation)
    {
        Interlocked.Increment(ref _waiting);
        try
        {
            await _slots.WaitAsync(cancellation).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }
        return new Lease(_slots);
    }

    /// <summary>A held slot.</summary>
    public sealed class Lease : IDisposable
    {
        private SemaphoreSlim? _slots;

        internal Lease(SemaphoreSlim slots) => _slots = slots;

        /// <summary>Gives the slot back; later calls do nothing.</summary>
        public void Dispose() => Interlocked.Exchange(ref _slots, null)?.Release();
    }
}
