namespace Gati.MLNet.Online;

/// <summary>A stream of requests over a labelled dataset: the row of each request and the phase it belongs to.</summary>
/// <param name="Rows">Dataset row of each request, in order.</param>
/// <param name="Phases">Phase of each request (0-based).</param>
/// <param name="PopularClasses">Per phase, the classes that dominate it (empty for a uniform stream).</param>
public sealed record Workload(int[] Rows, int[] Phases, IReadOnlyList<int[]> PopularClasses)
{
    /// <summary>Requests in the stream.</summary>
    public int Count => Rows.Length;

    /// <summary>Per phase, what sets it apart when it is not its popular classes (e.g. "shifted camera"); null if none.</summary>
    public IReadOnlyList<string>? PhaseNames { get; init; }
}

/// <summary>
/// Seeded request streams with and without temporal locality (docs/online.md#benchmark), to replay through served
/// caches: real prediction traffic is often dominated for a while by a few classes or kinds of input, then by others.
/// </summary>
public static class Workloads
{
    /// <summary>Rows drawn uniformly with replacement, in one phase.</summary>
    public static Workload Uniform(IReadOnlyList<uint> labels, int requests, int seed)
    {
        Check(labels, requests);
        var random = new Random(seed);
        var rows = Enumerable.Range(0, requests).Select(_ => random.Next(labels.Count)).ToArray();
        return new Workload(rows, new int[requests], [[]]);
    }

    /// <summary>
    /// Phases of <paramref name="phaseLength"/> requests; in each, <paramref name="popular"/> classes drawn at random
    /// (no class popular in two consecutive phases) take <paramref name="popularShare"/> of the requests with Zipf
    /// weights 1/rank^<paramref name="zipf"/>, and the other classes share the rest evenly; within a class, rows are
    /// drawn uniformly with replacement.
    /// </summary>
    /// <param name="labels">1-based key labels of the dataset's rows (as ML.NET reads them).</param>
    /// <param name="requests">Stream length.</param>
    /// <param name="phaseLength">Requests per phase.</param>
    /// <param name="popular">Popular classes per phase.</param>
    /// <param name="popularShare">Their share of a phase's requests.</param>
    /// <param name="zipf">Zipf exponent among the popular classes (0: equal).</param>
    /// <param name="seed">Seed of every draw.</param>
    public static Workload Phased(IReadOnlyList<uint> labels, int requests, int phaseLength, int popular = 3, double popularShare = 0.9, double zipf = 1.0, int seed = 0)
    {
        Check(labels, requests);
        ArgumentOutOfRangeException.ThrowIfLessThan(phaseLength, 1);
        var byClass = labels.Select((label, row) => (label, row)).GroupBy(p => (int)p.label - 1).OrderBy(g => g.Key).ToDictionary(g => g.Key, g => g.Select(p => p.row).ToArray());
        var classes = byClass.Keys.ToArray();
        if (popular < 1 || popular * 2 > classes.Length)
            throw new ArgumentOutOfRangeException(nameof(popular), popular, $"Between 1 and half of the {classes.Length} classes.");
        if (popularShare is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(popularShare), popularShare, "Must be in (0, 1].");
        var random = new Random(seed);
        var rows = new int[requests];
        var phases = new int[requests];
        var popularByPhase = new List<int[]>();
        var previous = Array.Empty<int>();
        for (var start = 0; start < requests; start += phaseLength)
        {
            var phase = popularByPhase.Count;
            var choice = classes.Except(previous).OrderBy(_ => random.Next()).Take(popular).ToArray();
            popularByPhase.Add(choice);
            previous = choice;
            Draw(random, byClass, classes, choice, popularShare, zipf, rows.AsSpan(start, Math.Min(requests, start + phaseLength) - start));
            phases.AsSpan(start, Math.Min(requests, start + phaseLength) - start).Fill(phase);
        }
        return new Workload(rows, phases, popularByPhase);
    }

    /// <summary>
    /// One phase of <see cref="Phased"/> with the popular classes given (in Zipf rank order): what a phase of that stream
    /// looks like on another dataset split, e.g. the training rows an update of the phase could have had.
    /// </summary>
    public static Workload Phase(IReadOnlyList<uint> labels, int requests, IReadOnlyList<int> popularClasses, double popularShare = 0.9, double zipf = 1.0, int seed = 0)
    {
        Check(labels, requests);
        ArgumentNullException.ThrowIfNull(popularClasses);
        var byClass = labels.Select((label, row) => (label, row)).GroupBy(p => (int)p.label - 1).OrderBy(g => g.Key).ToDictionary(g => g.Key, g => g.Select(p => p.row).ToArray());
        var classes = byClass.Keys.ToArray();
        var missing = popularClasses.Where(c => !byClass.ContainsKey(c)).ToArray();
        if (missing.Length > 0) throw new ArgumentException($"Popular classes {string.Join(", ", missing)} have no rows in the dataset (classes present: {string.Join(", ", classes)}).", nameof(popularClasses));
        if (popularClasses.Count < 1 || popularClasses.Count >= classes.Length || popularClasses.Distinct().Count() != popularClasses.Count)
            throw new ArgumentException($"Between 1 and {classes.Length - 1} distinct popular classes, got {popularClasses.Count}.", nameof(popularClasses));
        if (popularShare is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(popularShare), popularShare, "Must be in (0, 1].");
        var rows = new int[requests];
        Draw(new Random(seed), byClass, classes, popularClasses.ToArray(), popularShare, zipf, rows);
        return new Workload(rows, new int[requests], [popularClasses.ToArray()]);
    }

    /// <summary>Draws rows of one phase: the popular classes by Zipf rank, the others evenly, rows within a class uniformly.</summary>
    private static void Draw(Random random, Dictionary<int, int[]> byClass, int[] classes, int[] choice, double popularShare, double zipf, Span<int> rows)
    {
        var popular = choice.Length;
        var weights = new double[classes.Length];
        var zipfSum = Enumerable.Range(1, popular).Sum(rank => 1 / Math.Pow(rank, zipf));
        for (var rank = 0; rank < popular; rank++) weights[Array.IndexOf(classes, choice[rank])] = popularShare / Math.Pow(rank + 1, zipf) / zipfSum;
        var others = classes.Length - popular;
        for (var c = 0; c < classes.Length; c++) if (!choice.Contains(classes[c])) weights[c] = (1 - popularShare) / others;
        for (var i = 0; i < rows.Length; i++)
        {
            var u = random.NextDouble();
            var c = 0;
            while (c < weights.Length - 1 && u >= weights[c])
            {
                u -= weights[c];
                c++;
            }
            var members = byClass[classes[c]];
            rows[i] = members[random.Next(members.Length)];
        }
    }

    /// <summary>
    /// Rows drawn uniformly with replacement; the second half of the requests comes through a changed camera
    /// (<see cref="CameraShift"/>): there a request's row is <c>labels.Count + r</c>, meaning the shifted copy of row r.
    /// Phase 0 is the first half, phase 1 the shifted half.
    /// </summary>
    /// <param name="labels">Labels of the dataset's rows (only their number is used).</param>
    /// <param name="requests">Stream length (at least 2).</param>
    /// <param name="seed">Seed of the draws.</param>
    public static Workload Drift(IReadOnlyList<uint> labels, int requests, int seed)
    {
        Check(labels, requests);
        ArgumentOutOfRangeException.ThrowIfLessThan(requests, 2);
        var random = new Random(seed);
        var half = requests / 2;
        var rows = new int[requests];
        var phases = new int[requests];
        for (var i = 0; i < requests; i++)
        {
            var shifted = i >= half;
            rows[i] = random.Next(labels.Count) + (shifted ? labels.Count : 0);
            phases[i] = shifted ? 1 : 0;
        }
        return new Workload(rows, phases, [[], []]) { PhaseNames = ["original camera", "shifted camera"] };
    }

    private static void Check(IReadOnlyList<uint> labels, int requests)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (labels.Count == 0) throw new ArgumentException("The dataset has no rows to draw requests from.", nameof(labels));
        ArgumentOutOfRangeException.ThrowIfLessThan(requests, 1);
    }
}
