using System.Globalization;
using Gati.MLNet.Inference;

namespace Gati.MLNet.Online;

/// <summary>
/// Where the activations of a row kept at batch 1 come from (<see cref="OnlineCacheOptions.CopyActivationsOnRequest"/>):
/// copied by the request from the single graph's tapped form (segment by segment where the engine has no single graph),
/// or recomputed by the shadow worker from a copy of the input after the plain single graph answered. Chosen once per
/// sampler, by timing a whole-network request both ways unless the option fixes it.
/// </summary>
/// <param name="Copy">True: the request keeps its activations as it runs.</param>
/// <param name="SingleGraphMs">A whole-network request on the single graph, ms (NaN when not measured).</param>
/// <param name="CopyingMs">The same request on the tapped single graph with every cache layer's activations copied (NaN when not measured).</param>
/// <param name="Reason">Why, in words.</param>
internal sealed record ActivationCopy(bool Copy, double SingleGraphMs, double CopyingMs, string Reason)
{
    /// <summary>
    /// Copying wins unless a whole-network request costs more than this much more that way than on the single graph. A
    /// recomputed row costs the worker a whole forward pass on one thread beside serving: on the imported ResNet-18 at 25
    /// requests a second, about half a core against a fifth when copying (docs/online.md). The margin absorbs noisy
    /// timings (one run that held several engines measured 12 % and 21 % where quiet runs gave a few percent).
    /// </summary>
    internal const double MostExtra = 0.25;

    /// <summary>The choice for rows kept by a sampler on <paramref name="engine"/> with <paramref name="options"/>.</summary>
    public static ActivationCopy For(EarlyExitEngine engine, OnlineCacheOptions options)
    {
        if (options.CopyActivationsOnRequest is { } fixedChoice)
            return new ActivationCopy(fixedChoice, double.NaN, double.NaN, fixedChoice ? "copied by the request (set)" : "recomputed by the worker after the single graph (set)");
        if (!engine.ExposesActivations)
            return new ActivationCopy(false, double.NaN, double.NaN, "not shadowed (the backend keeps its activations)");
        var first = engine.TimeWholeRuns(1);
        if (first is not { } one)
            return new ActivationCopy(true, double.NaN, double.NaN, "copied on segment calls (no single graph: every call runs segment by segment)");
        // About a second and a half of measuring on a large model, a hundred calls each on a small one.
        var runs = (int)Math.Clamp(1500 / Math.Max(one.SingleGraphMs + one.CopyingMs, 0.01), 11, 101) | 1;
        var (single, copying) = engine.TimeWholeRuns(runs)!.Value;
        var copy = copying <= single * (1 + MostExtra);
        var measured = string.Create(CultureInfo.InvariantCulture, $"a whole-network request {single:F3} ms on the single graph, {copying:F3} ms on its tapped form with its activations copied");
        return new ActivationCopy(copy, single, copying, copy
            ? $"copied from the tapped single graph ({measured}: at most {MostExtra:P0} more)"
            : $"recomputed by the worker after the single graph ({measured}: more than {MostExtra:P0} more)");
    }
}
