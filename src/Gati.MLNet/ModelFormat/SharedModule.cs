using TorchSharp;

namespace Gati.MLNet.ModelFormat;

/// <summary>
/// A TorchSharp module shared by several transformers (e.g. the base ResNet used by the base-model transformer,
/// the feature extractor and the learned caches of one chain), with a reference count so that its native memory
/// is released when the last holder is disposed, and one lock that serialises its forward passes. The last holder frees
/// the module under that lock, so disposing a model while another thread is inside a forward pass (a transformer's
/// cursor) waits for the pass instead of freeing native memory under it; passes enter through <see cref="Use"/>.
/// </summary>
internal sealed class SharedModule<TModule> where TModule : torch.nn.Module
{
    private int _references = 1;

    public SharedModule(TModule module, torch.Device device)
    {
        Module = module;
        Device = device;
    }

    public TModule Module { get; }

    public torch.Device Device { get; }

    /// <summary>Serialises forward passes through <see cref="Module"/> (enter it with <see cref="Use"/>, which also checks that the module is alive).</summary>
    public object Gate { get; } = new();

    public bool IsDisposed => Volatile.Read(ref _references) <= 0;

    /// <summary>Adds a holder; throws if the module was already released.</summary>
    public SharedModule<TModule> Acquire()
    {
        while (true)
        {
            var current = Volatile.Read(ref _references);
            ObjectDisposedException.ThrowIf(current <= 0, this);
            if (Interlocked.CompareExchange(ref _references, current + 1, current) == current) return this;
        }
    }

    /// <summary>
    /// Takes <see cref="Gate"/> for a forward pass (or any other use of the native module) until the returned lease is
    /// disposed. Whether the module is alive is checked under the lock: a pass that got in before the last holder left
    /// runs to its end, one that comes after gets an <see cref="ObjectDisposedException"/> instead of freed memory.
    /// </summary>
    public Lease Use()
    {
        Monitor.Enter(Gate);
        if (IsDisposed)
        {
            Monitor.Exit(Gate);
            throw new ObjectDisposedException(typeof(TModule).Name, "The network was released (its model was disposed).");
        }
        return new Lease(Gate);
    }

    /// <summary>Removes a holder; the last one disposes the module, once no forward pass is using it.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        lock (Gate) Module.Dispose();
    }

    /// <summary>Holds <see cref="Gate"/> (from <see cref="Use"/>) until disposed.</summary>
    public readonly struct Lease(object gate) : IDisposable
    {
        /// <summary>Leaves the lock.</summary>
        public void Dispose() => Monitor.Exit(gate);
    }
}
