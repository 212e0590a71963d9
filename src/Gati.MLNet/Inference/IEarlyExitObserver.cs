using Gati.MLNet.Inference.Backends;

namespace Gati.MLNet.Inference;

/// <summary>
/// Watches an engine's calls from inside: the seam through which online caches shadow served requests, so that the
/// engine does not depend on what watches it (<see cref="EarlyExitEngine.Observer"/>).
/// </summary>
internal interface IEarlyExitObserver
{
    /// <summary>
    /// Starts watching one call of <paramref name="count"/> rows of <paramref name="engine"/>, before it runs anything
    /// (and before it reads its thresholds); null leaves the call alone.
    /// </summary>
    IEarlyExitCallObserver? Observe(EarlyExitEngine engine, int count);
}

/// <summary>One call as an observer sees it; not shared between threads. Spans are valid only during each callback.</summary>
internal interface IEarlyExitCallObserver
{
    /// <summary>
    /// This call of one input keeps what each cache saw: it runs on the single graph's tapped form
    /// (<see cref="AnsweredTapped"/>), or segment by segment where the backend has none, instead of the plain single graph.
    /// </summary>
    bool WantsActivations { get; }

    /// <summary>The call of one input was answered by the single graph: no activations, only the input and the answer.</summary>
    void AnsweredWhole(ReadOnlySpan<float> input, EarlyExitBatch result);

    /// <summary>The call of one input was answered by the tapped single graph: what each cache it reached saw, and the answer.</summary>
    void AnsweredTapped(SingleGraphTaps taps, EarlyExitBatch result);

    /// <summary>
    /// Cache segment <paramref name="segment"/> ran on the rows at <paramref name="alive"/> (their indices in the call, by
    /// position), before the rows that exit there leave the batch.
    /// </summary>
    void AfterCache(IEarlyExitCall call, int segment, SegmentResult output, ReadOnlySpan<int> alive);

    /// <summary>The rows still in the batch after cache segment <paramref name="segment"/>'s exits, by position.</summary>
    void AfterCompaction(int segment, ReadOnlySpan<int> alive);

    /// <summary>The final segment (the base model's head) ran on the rows at <paramref name="alive"/>.</summary>
    void AtEnd(IEarlyExitCall call, SegmentResult output, ReadOnlySpan<int> alive);

    /// <summary>The call run segment by segment has its answer.</summary>
    void Answered(EarlyExitBatch result);
}
