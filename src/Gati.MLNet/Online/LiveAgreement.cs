using Gati.MLNet.Policy;

namespace Gati.MLNet.Online;

/// <summary>One cache's live exit agreement, from the most recent sampled requests that exited there.</summary>
/// <param name="Layer">The cache's layer.</param>
/// <param name="Exits">Sampled exits counted.</param>
/// <param name="Agreed">Of those, answers equal to the base model's.</param>
/// <param name="Lower">Lower confidence bound of the agreement.</param>
/// <param name="Upper">Upper confidence bound.</param>
/// <param name="Threshold">The exit threshold in force.</param>
public sealed record LayerAgreement(int Layer, long Exits, long Agreed, double Lower, double Upper, float Threshold)
{
    /// <summary>Agreed / Exits (NaN without exits).</summary>
    public double Estimate => Exits == 0 ? double.NaN : (double)Agreed / Exits;
}

/// <summary>Live agreement with the base model, per cache and overall, with exact (Clopper-Pearson) one-sided bounds.</summary>
/// <param name="Layers">Per cache.</param>
/// <param name="Requests">Sampled requests counted (overall).</param>
/// <param name="Agreed">Of those, answers equal to the base model's (requests that ran the whole network agree by definition).</param>
/// <param name="Lower">Lower bound of overall agreement.</param>
/// <param name="Upper">Upper bound.</param>
/// <param name="Confidence">One-sided confidence of each bound.</param>
public sealed record LiveAgreementSnapshot(IReadOnlyList<LayerAgreement> Layers, long Requests, long Agreed, double Lower, double Upper, double Confidence)
{
    /// <summary>Agreed / Requests (NaN without requests).</summary>
    public double Estimate => Requests == 0 ? double.NaN : (double)Agreed / Requests;
}

/// <summary>
/// Keeps the outcomes of the last <see cref="WindowSize"/> labelled sampled requests overall and per cache (sliding),
/// and gives agreement with exact one-sided bounds (<see cref="AgreementBounds.Exact"/>), the statistic every
/// overall target is judged by. Only uniformly sampled requests count: requests kept because
/// they ran the whole network are the hardest inputs and would bias the estimate.
/// </summary>
public sealed class LiveAgreement
{
    private readonly object _gate = new();
    private readonly Queue<bool> _overall = new();
    private readonly Queue<bool>[] _layers;
    private readonly int[] _layerNumbers;
    private long _overallAgreed;
    private readonly long[] _layerAgreed;

    /// <summary>Creates the tracker for caches on <paramref name="layers"/> (in order).</summary>
    public LiveAgreement(IReadOnlyList<int> layers, int windowSize = 2000, double confidence = 0.95)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentOutOfRangeException.ThrowIfLessThan(windowSize, 1);
        if (confidence is <= 0.5 or >= 1) throw new ArgumentOutOfRangeException(nameof(confidence), confidence, "Confidence must be in (0.5, 1).");
        _layerNumbers = layers.ToArray();
        _layers = layers.Select(_ => new Queue<bool>()).ToArray();
        _layerAgreed = new long[layers.Count];
        WindowSize = windowSize;
        Confidence = confidence;
    }

    /// <summary>Outcomes kept, overall and per cache.</summary>
    public int WindowSize { get; }

    /// <summary>One-sided confidence of the bounds.</summary>
    public double Confidence { get; }

    /// <summary>The normal quantile of <see cref="Confidence"/>.</summary>
    [Obsolete("Live bounds are exact (Clopper-Pearson) at Confidence, no longer Wilson bounds at this quantile; use Confidence.")]
    public double Z => AgreementBounds.NormalQuantile(Confidence);

    /// <summary>Counts one labelled sampled request: where it exited (cache index, or -1 for the whole network) and whether it agreed.</summary>
    public void Add(int cacheIndex, bool agreed)
    {
        lock (_gate)
        {
            Push(_overall, agreed, ref _overallAgreed);
            if (cacheIndex >= 0) Push(_layers[cacheIndex], agreed, ref _layerAgreed[cacheIndex]);
        }
    }

    /// <summary>Forgets a cache's outcomes (after its threshold or its networks changed: old exits say nothing about the new ones).</summary>
    public void Reset(int cacheIndex)
    {
        lock (_gate)
        {
            _layers[cacheIndex].Clear();
            _layerAgreed[cacheIndex] = 0;
        }
    }

    /// <summary>Forgets the overall outcomes (after thresholds changed).</summary>
    public void ResetOverall()
    {
        lock (_gate)
        {
            _overall.Clear();
            _overallAgreed = 0;
        }
    }

    /// <summary>The figures now, with the thresholds in force.</summary>
    public LiveAgreementSnapshot Snapshot(IReadOnlyList<float> thresholds)
    {
        lock (_gate)
        {
            var layers = new LayerAgreement[_layers.Length];
            for (var i = 0; i < layers.Length; i++)
            {
                var (lower, upper) = AgreementBounds.Exact(_layerAgreed[i], _layers[i].Count, Confidence);
                layers[i] = new LayerAgreement(_layerNumbers[i], _layers[i].Count, _layerAgreed[i], lower, upper, thresholds[i]);
            }
            var (l, u) = AgreementBounds.Exact(_overallAgreed, _overall.Count, Confidence);
            return new LiveAgreementSnapshot(layers, _overall.Count, _overallAgreed, l, u, Confidence);
        }
    }

    private void Push(Queue<bool> queue, bool agreed, ref long count)
    {
        queue.Enqueue(agreed);
        if (agreed) count++;
        if (queue.Count > WindowSize && queue.Dequeue()) count--;
    }
}
