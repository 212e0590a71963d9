using System.Globalization;
using Gati.MLNet.Inference;

namespace Gati.MLNet.Online;

/// <summary>
/// Where the activations of a row kept at batch 1 come from (<see cref="OnlineCacheOptions.CopyActivationsOnRequest"/>):
/// copied by the request as it runs segment by segment, or recomputed by the shadow worker from a copy of the input after
/// the single graph answered. Chosen once per sampler, by timing a whole-network request both ways unless the option
/// fixes it.
/// </summary>
/// <param name="Copy">True: segment by segment, activations copied on the way.</param>
/// <param name="SingleGraphMs">A whole-network request on the single graph, ms (NaN when not measured).</param>
/// <param name="SegmentsMs">The same request segment by segment with every cache layer's activations copied (NaN when not measured).</param>
/// <param name="Reason">Why, in words.</param>
internal sealed record ActivationCopy(bool Copy, double SingleGraphMs, double SegmentsMs, string Reason)
{
    /// <summary>
    /// Segment calls win unless a whole-network request costs more than this much more that way than on the single
    /// graph. A recomputed row costs the worker a whole forward pass on one thread beside serving: on the imported
    /// ResNet-18 at 25 requests a second, about half a core against a fifth when copying (docs/online.md), with requests
    /// no slower either way. There segment calls measured 2.5-4 % more in quiet runs, but 12 % and 21 % in one run that
    /// held more engines, which a margin of 5 % turned into recomputing: the margin is there for a small network, where
    /// the calls' fixed cost is a large share of a request.
    /// </summary>
    internal const double MostExtra = 0.25;

    /// <summary>The choice for rows kept by a sampler on <paramref name="engine"/> with <paramref name="options"/>.</summary>
    public static ActivationCopy For(EarlyExitEngine engine, OnlineCacheOptions options)
    {
        if (options.CopyActivationsOnRequest is { } fixedChoice)
            return new ActivationCopy(fixedChoice, double.NaN, double.NaN, fixedChoice ? "copied on segment calls (set)" : "recomputed by the worker after the single graph (set)");
        if (!engine.ExposesActivations)
            return new ActivationCopy(false, double.NaN, double.NaN, "not shadowed (the backend keeps its activations)");
        var first = engine.TimeWholeRuns(1);
        if (first is not { } one)
            return new ActivationCopy(true, double.NaN, double.NaN, "copied on segment calls (no single graph: every call runs segment by segment)");
        // About a second and a half of measuring on a large model, a hundred calls each on a small one.
        var runs = (int)Math.Clamp(1500 / Math.Max(one.SingleGraphMs + one.SegmentsMs, 0.01), 11, 101) | 1;
        var (single, segments) = engine.TimeWholeRuns(runs)!.Value;
        var copy = segments <= single * (1 + MostExtra);
        var measured = string.Create(CultureInfo.InvariantCulture, $"a whole-network request {single:F3} ms on the single graph, {segments:F3} ms segment by segment with its activations copied");
        return new ActivationCopy(copy, single, segments, copy
            ? $"copied on segment calls ({measured}: at most {MostExtra:P0} more)"
            : $"recomputed by the worker after the single graph ({measured}: more than {MostExtra:P0} more)");
    }
}
