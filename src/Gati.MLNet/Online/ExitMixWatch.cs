namespace Gati.MLNet.Online;

/// <summary>
/// Watches where sampled requests exit (each cache, or the whole network) for a change of traffic that live agreement is
/// too slow to show. After a change of camera on the imported ResNet-18, the share of requests that exit early fell from
/// about half to a fifth within a few hundred requests, while agreement fell by under a point: a live window of 2,000
/// sampled requests, most of them from before, needed thousands of requests to show that (docs/online.md). The exit mix
/// of the newest <see cref="RecentBlocks"/> blocks of <see cref="BlockRows"/> sampled requests is compared with that of
/// the <see cref="ReferenceBlocks"/> blocks before them; a total variation distance above <see cref="ChangedAbove"/>
/// marks a change, dated to the block among the newest where the mix before and after it differ most. Only the exits of
/// one engine under one set of thresholds are compared: the sampler starts the watch again (<see cref="Reset"/>)
/// whenever either changes.
/// </summary>
internal sealed class ExitMixWatch
{
    /// <summary>Sampled requests per block.</summary>
    public const int BlockRows = 50;

    /// <summary>Blocks of the newest mix (150 sampled requests: 750 requests at a 20 % sample).</summary>
    public const int RecentBlocks = 3;

    /// <summary>Blocks of the mix they are compared with.</summary>
    public const int ReferenceBlocks = 4;

    /// <summary>
    /// Total variation distance between the two mixes above which the traffic counts as changed. Samples of 150 and 200
    /// requests from one mix of five exits lie about 0.08 apart (0.16 in one pair of a hundred) and, in 20 simulated
    /// streams of 4,000 sampled requests each judged at every block, never above it (ExitMixWatchTests); the camera
    /// change moved the imported ResNet-18's mix by about 0.35-0.4 (0.33 and 0.36 when seen in the Zen 4 drift runs),
    /// and its phases of popular classes moved the share of early exits alone by 0.15-0.38.
    /// </summary>
    public const double ChangedAbove = 0.25;

    private readonly object _gate = new();
    private readonly int _exits;
    private readonly Queue<(int[] Counts, long First)> _blocks = new();
    private int[] _block;
    private int _inBlock;
    private long _blockFirst;

    /// <summary>Creates the watch over <paramref name="caches"/> caches (exits: each cache and the whole network).</summary>
    public ExitMixWatch(int caches)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(caches);
        _exits = caches + 1;
        _block = new int[_exits];
    }

    /// <summary>
    /// Counts one sampled request: the cache it exited at (-1: the whole network) and its place in the sample. Returns the
    /// change when this request completes a block whose newest mix is found changed (the watch then starts again, so the
    /// same change is not reported twice), otherwise null. Thread-safe.
    /// </summary>
    public ExitMixChange? Add(int exitCache, long sampleIndex)
    {
        if (exitCache < -1 || exitCache >= _exits - 1) throw new ArgumentOutOfRangeException(nameof(exitCache), exitCache, $"An exit is -1 (the whole network) or a cache index below {_exits - 1}.");
        lock (_gate)
        {
            if (_inBlock == 0) _blockFirst = sampleIndex;
            _block[exitCache + 1]++;
            if (++_inBlock < BlockRows) return null;
            _blocks.Enqueue((_block, _blockFirst));
            _block = new int[_exits];
            _inBlock = 0;
            if (_blocks.Count > RecentBlocks + ReferenceBlocks) _blocks.Dequeue();
            if (_blocks.Count < RecentBlocks + ReferenceBlocks) return null;
            var all = _blocks.ToArray();
            var reference = Shares(all[..ReferenceBlocks]);
            var recent = Shares(all[ReferenceBlocks..]);
            var distance = ClassMix.Distance(reference, recent);
            if (distance <= ChangedAbove) return null;
            ResetLocked();
            return new ExitMixChange(all[Start(all)].First, sampleIndex, distance);
        }
    }

    /// <summary>Forgets every exit counted (after the thresholds or the caches changed: exits before say nothing about those after).</summary>
    public void Reset()
    {
        lock (_gate) ResetLocked();
    }

    private void ResetLocked()
    {
        _blocks.Clear();
        Array.Clear(_block);
        _inBlock = 0;
    }

    /// <summary>
    /// The block the change began with, among the newest: the split of the blocks whose two sides differ most, weighed by
    /// how many requests each side has (the distance times the square root of na·nb/(na + nb), as a two-sample statistic
    /// is), so that a change found a block or two after it began is not dated to before it.
    /// </summary>
    private int Start((int[] Counts, long First)[] blocks)
    {
        var (best, score) = (ReferenceBlocks, double.NegativeInfinity);
        for (var k = ReferenceBlocks; k < blocks.Length; k++)
        {
            var (before, after) = ((double)k, (double)(blocks.Length - k));
            var s = ClassMix.Distance(Shares(blocks[..k]), Shares(blocks[k..])) * Math.Sqrt(before * after / (before + after));
            if (s > score) (best, score) = (k, s);
        }
        return best;
    }

    private double[] Shares((int[] Counts, long First)[] blocks)
    {
        var shares = new double[_exits];
        foreach (var (counts, _) in blocks)
            for (var e = 0; e < _exits; e++) shares[e] += counts[e];
        var total = shares.Sum();
        for (var e = 0; e < _exits; e++) shares[e] /= total;
        return shares;
    }
}

/// <summary>A change of the exit mix found by <see cref="ExitMixWatch"/>.</summary>
/// <param name="Began">Place in the sample of the first request of the newest mix.</param>
/// <param name="Seen">Place of the request that completed the block it was found on.</param>
/// <param name="Distance">Total variation distance between the newest mix and the one before.</param>
internal readonly record struct ExitMixChange(long Began, long Seen, double Distance);
