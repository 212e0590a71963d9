namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// The execution seam of the early-exit engine: the base network cut into segments, one per cache (the blocks up to
/// its layer, with its lookup) plus a final one (the remaining blocks and the head). The engine decides which rows
/// continue; a backend only runs segments on the rows it is given.
/// </summary>
internal interface IEarlyExitBackend : IDisposable
{
    /// <summary>For reports, e.g. "ONNX Runtime 1.31.1 (CPU)".</summary>
    string Description { get; }

    /// <summary>Where it runs, e.g. "cpu" or "cuda:0".</summary>
    string Device { get; }

    /// <summary>
    /// Starts a call on <paramref name="count"/> rows entering segment <paramref name="segment"/>: images (row-major
    /// C*H*W each, validated by the engine) for segment 0, else the activations of the previous cache's layer (a shadow
    /// run continuing rows that exited there). <paramref name="thresholds"/> holds every cache segment's exit threshold.
    /// </summary>
    IEarlyExitCall Begin(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds);

    /// <summary>
    /// Runs one image (C*H*W, validated by the engine) through the whole early exit in a single call, where the backend
    /// has such a path (ONNX Runtime on the CPU: <see cref="Models.EarlyExitSingleGraph"/>): writes the answer's
    /// probabilities to <paramref name="probabilities"/> and sets <paramref name="exit"/> to the index of the cache that
    /// answered, or the number of caches when the base model did. False when there is no such path (then nothing is run).
    /// </summary>
    bool TryRunOne(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit);

    /// <summary>
    /// As <see cref="TryRunOne"/>, on the single graph's tapped form: also hands out what each cache the request reached saw
    /// (the caller disposes it). Null where there is no such path (then nothing is run).
    /// </summary>
    SingleGraphTaps? TryRunOneTapped(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit);

    /// <summary>
    /// Opens what <see cref="TryRunOneTapped"/> runs on ahead of the first call, and has <see cref="TryRunOne"/> answer on it
    /// from then on (one session for every call); false where there is no such path.
    /// </summary>
    bool PrepareTapped();
}

/// <summary>One engine call's state; not shared between threads.</summary>
internal interface IEarlyExitCall : IDisposable
{
    /// <summary>
    /// Runs segment <paramref name="segment"/> on the rows still in the batch (all rows for segment 0; after
    /// <see cref="Keep"/>, those kept). Gives each row's class probabilities (rows x k) and, for a cache segment, whether
    /// its cache hit; both stay valid until the next call on this object.
    /// </summary>
    SegmentResult Run(int segment);

    /// <summary>
    /// The activation buffer (rows x values of its layer) that cache segment <paramref name="segment"/> wrote: its rows
    /// in the order they ran, moved to the front by <see cref="Keep"/> since. Empty where the backend cannot expose
    /// activations (TorchSharp frees each as soon as the next exists; on CUDA they stay on the GPU).
    /// </summary>
    ReadOnlySpan<float> Activation(int segment);

    /// <summary>Keeps only <paramref name="rows"/> (ascending positions among the rows of the last <see cref="Run"/>) for the next segment.</summary>
    void Keep(ReadOnlySpan<int> rows);
}

/// <summary>The outputs of one segment for the rows it ran on.</summary>
/// <param name="probabilities">rows x k probabilities: the cache's predictor on a cache segment, the base model on the final one.</param>
/// <param name="hits">Per row, whether the cache's selector reached its threshold (empty on the final segment).</param>
/// <param name="hitProbabilities">Per row, the selector's P(hit) (empty on the final segment).</param>
internal readonly ref struct SegmentResult(ReadOnlySpan<float> probabilities, ReadOnlySpan<bool> hits, ReadOnlySpan<float> hitProbabilities = default)
{
    public ReadOnlySpan<float> Probabilities { get; } = probabilities;

    public ReadOnlySpan<bool> Hits { get; } = hits;

    public ReadOnlySpan<float> HitProbabilities { get; } = hitProbabilities;
}
