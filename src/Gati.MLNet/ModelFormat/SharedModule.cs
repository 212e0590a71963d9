using TorchSharp;

namespace Gati.MLNet.ModelFormat;

/// <summary>
/// A TorchSharp module shared by several transformers (e.g. the base ResNet used by the base-model transformer,
/// the feature extractor and the learned caches of one chain), with a reference count so that its native memory
/// is released when the last holder is disposed, and one lock that serialises its forward passes.
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

    /// <summary>Serialises forward passes through <see cref="Module"/>.</summary>
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

    /// <summary>Removes a holder; the last one disposes the module.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0) Module.Dispose();
    }
}
