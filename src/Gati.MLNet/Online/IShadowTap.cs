namespace Gati.MLNet.Online;

/// <summary>What the online component is handed about the requests it chose to shadow (by <see cref="ShadowObserver"/>, watching an engine).</summary>
internal interface IShadowTap
{
    /// <summary>Rows of a call of <paramref name="count"/> to sample uniformly (null: none).</summary>
    bool[]? Choose(int count);

    /// <summary>Also keep rows that ran the whole network (their label is known; their features cost a copy or a recomputation).</summary>
    bool CaptureFullRuns { get; }

    /// <summary>
    /// Of a call of <paramref name="count"/> rows, those whose full run is kept should they run the whole network (null:
    /// every one), drawn before the call so that a row left out costs nothing; asked only with <see cref="CaptureFullRuns"/>.
    /// </summary>
    bool[]? KeepFullRuns(int count);

    /// <summary>Counts full runs that <see cref="KeepFullRuns"/> left out (never handed over).</summary>
    void LeftOut(int count);

    /// <summary>
    /// Counts the rows of a call that its draws may keep (sampled, or kept should they run the whole network), told before
    /// the call runs.
    /// </summary>
    void Drawn(int rows)
    {
    }

    /// <summary>
    /// A call of one input that keeps its row copies the activations as it runs (on the single graph's tapped form, or
    /// segment by segment), instead of taking the plain single graph and leaving the worker to recompute them from a copy of
    /// the input.
    /// </summary>
    bool CopyActivations { get; }

    /// <summary>The rows of one call, after it answered; rows that exited early have no base answer yet.</summary>
    void Captured(IReadOnlyList<ShadowRow> rows);
}
