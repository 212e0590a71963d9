using Gati.MLNet.Inference;
using Gati.MLNet.Transforms;
using Microsoft.ML;

namespace Gati.Extensions.ML;

/// <summary>
/// One loaded version of a model: the ML.NET model and its early-exit engine. Reference-counted: the entry holds
/// one reference while the generation is current, every call holds one while it runs; when a reload retires the
/// generation and the last call finishes, model and engine are disposed (their native memory released). Calls can
/// never hand an engine of an old generation to a new one: they hold the generation, not a pooled engine.
/// </summary>
internal sealed class ModelGeneration<TInput, TOutput> where TInput : class where TOutput : class, new()
{
    private readonly ITransformer _model;
    private int _references = 1;

    public ModelGeneration(int number, string path, ITransformer model, DataViewSchema inputSchema, EarlyExitPredictionEngine<TInput, TOutput> engine,
        string source = "file")
    {
        Number = number;
        Path = path;
        _model = model;
        InputSchema = inputSchema;
        Engine = engine;
        Source = source;
        LoadedAt = DateTimeOffset.UtcNow;
    }

    /// <summary>The ML.NET model this generation serves (what <c>SaveModel</c> writes).</summary>
    public ITransformer Model => _model;

    /// <summary>The input schema saved with the model file.</summary>
    public DataViewSchema InputSchema { get; }

    /// <summary>Where the generation came from: "file", or "online update N".</summary>
    public string Source { get; }

    public int Number { get; }

    public string Path { get; }

    public DateTimeOffset LoadedAt { get; }

    public EarlyExitPredictionEngine<TInput, TOutput> Engine { get; }

    public bool IsDisposed => Volatile.Read(ref _references) <= 0;

    /// <summary>Takes a reference unless the generation is already released.</summary>
    public bool TryAcquire()
    {
        while (true)
        {
            var current = Volatile.Read(ref _references);
            if (current <= 0) return false;
            if (Interlocked.CompareExchange(ref _references, current + 1, current) == current) return true;
        }
    }

    public void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        Engine.Dispose();
        EarlyExitModel.DisposeComponents(_model);
        // The generation's native memory (weights, sessions) is free now: return it to the system, or a server's
        // resident memory climbs with every hot reload (glibc keeps freed pages in its per-thread arenas).
        Gati.MLNet.Torch.NativeHeap.Trim();
    }
}
