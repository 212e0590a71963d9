using TorchSharp;

namespace Gati.MLNet.ModelFormat;

/// <summary>
/// A TorchSharp module shared by several transformers (e.g. the base ResNet used by the base-model transformer,
/// the feature extractor and the learned caches of one chain), with a reference count so that its native memory
/// is released when the last holder is disposed, and one lock that serialises its forward passes. The last holder frees
/// the module under that lock, so disposing a model while another thread is inside a forward pass (a transformer's
/// cursor) waits for the pass instead of freeing native memory under it; passes enter through <see cref="Use"/>.
/// </summary>
/// <remarks>
/// A module loaded from a model zip is built on first use (<see cref="Module"/>, <see cref="Device"/>): a process that
/// serves the zip's ONNX graphs never builds it, and so never loads libtorch (docs/model-format.md). The weights were
/// checked (size, checksum) when the zip was read.
/// </remarks>
internal sealed class SharedModule<TModule> where TModule : torch.nn.Module
{
    private int _references = 1;
    private Func<(TModule Module, torch.Device Device)>? _build;
    private TModule? _module;
    private torch.Device? _device;

    public SharedModule(TModule module, torch.Device device)
    {
        _module = module;
        _device = device;
    }

    /// <summary>A module built by <paramref name="build"/> on first use from <paramref name="storedEnvelope"/> (its checked weights envelope).</summary>
    public SharedModule(Func<(TModule Module, torch.Device Device)> build, byte[]? storedEnvelope = null)
    {
        _build = build;
        StoredEnvelope = storedEnvelope;
    }

    /// <summary>The weights envelope the module was loaded from (saving a module that was never built writes these bytes back).</summary>
    public byte[]? StoredEnvelope { get; }

    /// <summary>The module (built now if it was loaded lazily).</summary>
    public TModule Module
    {
        get
        {
            Materialize();
            return _module!;
        }
    }

    /// <summary>Where the module runs (builds it if needed).</summary>
    public torch.Device Device
    {
        get
        {
            Materialize();
            return _device!;
        }
    }

    /// <summary>Whether the module exists in memory (false until a lazily loaded module is first used).</summary>
    public bool IsBuilt => Volatile.Read(ref _module) is not null;

    private void Materialize()
    {
        if (Volatile.Read(ref _module) is not null) return;
        lock (Gate)
        {
            if (_module is not null) return;
            ObjectDisposedException.ThrowIf(IsDisposed, this);
            var (module, device) = _build!();
            _device = device;
            Volatile.Write(ref _module, module);
            _build = null;
        }
    }

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
        Materialize();
        Monitor.Enter(Gate);
        if (IsDisposed)
        {
            Monitor.Exit(Gate);
            throw new ObjectDisposedException(typeof(TModule).Name, "The network was released (its model was disposed).");
        }
        return new Lease(Gate);
    }

    /// <summary>
    /// A guarded forward pass over the first <paramref name="count"/> rows of a batch buffer: under <see cref="Use"/>'s lock,
    /// in a dispose scope, without gradients, the rows (<paramref name="rowShape"/> values each) go to <see cref="Device"/>
    /// as one tensor; <paramref name="pass"/> runs the module on them and copies what it needs into managed memory.
    /// </summary>
    public void Forward(float[] batch, int count, long[] rowShape, Action<TModule, torch.Tensor> pass)
    {
        var rowSize = 1L;
        foreach (var dimension in rowShape) rowSize *= dimension;
        using (Use())
        {
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var rows = torch.tensor(batch, [batch.Length / rowSize, .. rowShape]).narrow(0, 0, count).to(Device);
            pass(Module, rows);
        }
    }

    /// <summary>Removes a holder; the last one disposes the module (if it was ever built), once no forward pass is using it.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        lock (Gate)
        {
            _module?.Dispose();
            _build = null;
        }
    }

    /// <summary>Holds <see cref="Gate"/> (from <see cref="Use"/>) until disposed.</summary>
    public readonly struct Lease(object gate) : IDisposable
    {
        /// <summary>Leaves the lock.</summary>
        public void Dispose() => Monitor.Exit(gate);
    }
}
