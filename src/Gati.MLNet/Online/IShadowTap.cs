namespace Gati.MLNet.Online;

/// <summary>What the online component is handed about the requests it chose to shadow (by <see cref="ShadowObserver"/>, watching an engine).</summary>
internal interface IShadowTap
{
    /// <summary>Rows of a call of <paramref name="count"/> to sample uniformly (null: none).</summary>
    bool[]? Choose(int count);

    /// <summary>Also keep every row that ran the whole network (its label and features cost only a copy).</summary>
    bool CaptureFullRuns { get; }

    /// <summary>The rows of one call, after it answered; rows that exited early have no base answer yet.</summary>
    void Captured(IReadOnlyList<ShadowRow> rows);
}
