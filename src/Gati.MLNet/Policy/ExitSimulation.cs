namespace Gati.MLNet.Policy;

/// <summary>
/// The one definition of how a set of caches serves a row, outside the engine: caches are visited in plan order (by
/// layer), the first whose selector fires (P(hit) ≥ threshold) answers, and a row no selector takes runs the full
/// model, whose answer is the base model's and so agrees by definition. The optimizer's evaluator, the online
/// updater's calibration and simulation, the shadow sampler's threshold search and the engine's tests all serve rows
/// through it, so a change to the exit rule is made once.
/// </summary>
public static class ExitSimulation
{
    /// <summary>The exit of a row that no cache takes: the full model.</summary>
    public const int FullModel = -1;

    /// <summary>Whether a selector fires: P(hit) at or above the threshold (NaN never fires; +∞ turns the cache off).</summary>
    public static bool Fires(float hitProbability, float threshold) => hitProbability >= threshold;

    /// <summary>The cache (index in plan order) a row exits at, from its P(hit) per cache; <see cref="FullModel"/> when none fires.</summary>
    public static int ExitOf(ReadOnlySpan<float> hitProbabilities, ReadOnlySpan<float> thresholds)
    {
        if (hitProbabilities.Length < thresholds.Length) throw new ArgumentException("One P(hit) per cache.", nameof(hitProbabilities));
        for (var i = 0; i < thresholds.Length; i++) if (Fires(hitProbabilities[i], thresholds[i])) return i;
        return FullModel;
    }

    /// <summary>The exit of row <paramref name="row"/> from per-cache columns of P(hit).</summary>
    public static int ExitOf(IReadOnlyList<float[]> hitProbabilities, IReadOnlyList<float> thresholds, int row)
    {
        for (var i = 0; i < thresholds.Count; i++) if (Fires(hitProbabilities[i][row], thresholds[i])) return i;
        return FullModel;
    }

    /// <summary>The exit of row <paramref name="row"/> from per-cache columns of exit decisions already taken.</summary>
    public static int ExitOf(IReadOnlyList<bool[]> exits, int row)
    {
        for (var i = 0; i < exits.Count; i++) if (exits[i][row]) return i;
        return FullModel;
    }

    /// <summary>
    /// Serves every row from per-cache columns of exit decisions (<paramref name="exits"/>[cache][row]) and of whether the
    /// cache's answer agrees with the base model's (<paramref name="agrees"/>[cache][row]); caches in plan order.
    /// </summary>
    public static ExitOutcomes Serve(IReadOnlyList<bool[]> exits, IReadOnlyList<bool[]> agrees)
    {
        ArgumentNullException.ThrowIfNull(exits);
        ArgumentNullException.ThrowIfNull(agrees);
        if (exits.Count != agrees.Count) throw new ArgumentException("One agreement column per cache.", nameof(agrees));
        return Serve(exits.Count == 0 ? 0 : exits[0].Length, exits.Count, r => ExitOf(exits, r), (r, exit) => agrees[exit][r]);
    }

    /// <summary>Serves every row from per-cache columns of P(hit) at <paramref name="thresholds"/>.</summary>
    public static ExitOutcomes Serve(IReadOnlyList<float[]> hitProbabilities, IReadOnlyList<float> thresholds, IReadOnlyList<bool[]> agrees)
    {
        ArgumentNullException.ThrowIfNull(hitProbabilities);
        ArgumentNullException.ThrowIfNull(thresholds);
        ArgumentNullException.ThrowIfNull(agrees);
        if (hitProbabilities.Count != thresholds.Count || agrees.Count != thresholds.Count)
            throw new ArgumentException("One P(hit) column, threshold and agreement column per cache.", nameof(thresholds));
        return Serve(hitProbabilities.Count == 0 ? 0 : hitProbabilities[0].Length, thresholds.Count, r => ExitOf(hitProbabilities, thresholds, r),
            (r, exit) => agrees[exit][r]);
    }

    /// <summary>
    /// Serves rows held one record each (e.g. captured requests): <paramref name="exitOf"/> gives a row's exit (usually
    /// through <see cref="ExitOf(ReadOnlySpan{float}, ReadOnlySpan{float})"/>), <paramref name="agrees"/> whether cache
    /// <c>i</c>'s answer on it agrees.
    /// </summary>
    public static ExitOutcomes Serve<TRow>(IReadOnlyList<TRow> rows, int caches, Func<TRow, int> exitOf, Func<TRow, int, bool> agrees)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return Serve(rows.Count, caches, r => exitOf(rows[r]), (r, exit) => agrees(rows[r], exit));
    }

    /// <summary>The one serving loop: rows 0..<paramref name="rows"/>-1, each at its exit, agreeing by definition on the full model.</summary>
    private static ExitOutcomes Serve(int rows, int caches, Func<int, int> exitOf, Func<int, int, bool> agrees)
    {
        var outcomes = new ExitOutcomes(rows, caches);
        for (var r = 0; r < rows; r++)
        {
            var exit = exitOf(r);
            outcomes.Record(r, exit, exit == FullModel || agrees(r, exit));
        }
        return outcomes;
    }
}

/// <summary>How a set of caches served some rows in simulation (<see cref="ExitSimulation"/>).</summary>
public sealed class ExitOutcomes
{
    private readonly int[] _exit;
    private readonly bool[] _agreed;
    private readonly int[] _exits;
    private readonly int[] _disagreements;

    internal ExitOutcomes(int rows, int caches)
    {
        _exit = new int[rows];
        _agreed = new bool[rows];
        _exits = new int[caches];
        _disagreements = new int[caches];
    }

    internal void Record(int row, int exit, bool agreed)
    {
        _exit[row] = exit;
        _agreed[row] = agreed;
        if (agreed) Agreed++;
        if (exit == ExitSimulation.FullModel) return;
        EarlyExits++;
        _exits[exit]++;
        if (!agreed) _disagreements[exit]++;
    }

    /// <summary>Rows served.</summary>
    public int Rows => _exit.Length;

    /// <summary>Rows whose answer equals the base model's.</summary>
    public int Agreed { get; private set; }

    /// <summary>Rows that exited at a cache.</summary>
    public int EarlyExits { get; private set; }

    /// <summary>Agreed / Rows (NaN without rows).</summary>
    public double Agreement => Rows == 0 ? double.NaN : (double)Agreed / Rows;

    /// <summary>Per row: the cache (plan order) it exited at, or <see cref="ExitSimulation.FullModel"/>.</summary>
    public IReadOnlyList<int> Exit => _exit;

    /// <summary>Per row: whether its answer agreed with the base model's.</summary>
    public IReadOnlyList<bool> RowAgreed => _agreed;

    /// <summary>Per cache: rows that exited there.</summary>
    public IReadOnlyList<int> Exits => _exits;

    /// <summary>Per cache: rows that exited there with an answer that disagrees.</summary>
    public IReadOnlyList<int> Disagreements => _disagreements;
}
