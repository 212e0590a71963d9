using Gati.MLNet.Inference;

namespace Gati.MLNet.Online;

/// <summary>
/// One served request as the online updater sees it: the activations at the cache layers (its training features),
/// each cache selector's P(hit), what was served, and the base model's answer once known (the label).
/// </summary>
public sealed class ShadowRow
{
    internal ShadowRow(long sequence, int exitLayer, int servedClass, bool sampled, int caches)
    {
        Sequence = sequence;
        ExitLayer = exitLayer;
        ServedClass = servedClass;
        Sampled = sampled;
        Features = new float[]?[caches];
        HitProbabilities = new float[caches];
        Array.Fill(HitProbabilities, float.NaN);
        PredictedClasses = new int[caches];
        Array.Fill(PredictedClasses, -1);
    }

    /// <summary>Order of arrival (process-wide).</summary>
    public long Sequence { get; }

    /// <summary>The layer whose cache answered, 0 when the request ran the whole network.</summary>
    public int ExitLayer { get; }

    /// <summary>The 0-based class served.</summary>
    public int ServedClass { get; }

    /// <summary>
    /// True for rows drawn by the uniform sample (unbiased estimates of live agreement come from these only); false for
    /// rows kept because they ran the whole network anyway (free labels, but the hardest inputs).
    /// </summary>
    public bool Sampled { get; }

    /// <summary>
    /// Per cache (in layer order), the flattened activation of its layer (null where it was not computed); once the row is
    /// complete and kept in the window, what the cache's predictor reads after its parameter-free first step
    /// (<c>LearnedCache.ReducedFeatureShape</c>: Grid cells, 1-D pooling; the activation itself for FC and Conv).
    /// </summary>
    public float[]?[] Features { get; }

    /// <summary>Per cache, the selector's P(hit); NaN where the row did not reach it.</summary>
    public float[] HitProbabilities { get; }

    /// <summary>Per cache, the class its predictor gave (whether or not it exited); -1 where the row did not reach it.</summary>
    public int[] PredictedClasses { get; }

    /// <summary>The base model's probabilities (the distillation teacher); null until the rest of the network has run.</summary>
    public float[]? BaseProbabilities { get; internal set; }

    /// <summary>The base model's 0-based class, or -1 while unknown.</summary>
    public int BaseClass => BaseProbabilities is { } p ? EarlyExitEngine.ArgMax(p) : -1;

    /// <summary>Whether the served answer equals the base model's (null while unknown).</summary>
    public bool? Agreed => BaseProbabilities is null ? null : BaseClass == ServedClass;

    /// <summary>
    /// The request's input, kept only until its activations are computed (a row served by the single graph at batch 1
    /// reaches the tap without them).
    /// </summary>
    internal float[]? Input { get; set; }

    /// <summary>The engine that served the row (identity only).</summary>
    internal object? Engine { get; init; }

    /// <summary>That engine's threshold version when the row was served.</summary>
    internal int ThresholdVersion { get; init; }

    /// <summary>Place of a sampled row in the sampler's uniform sample, in order of capture (-1 for rows not sampled).</summary>
    internal long SampleIndex { get; set; } = -1;

    /// <summary>Bytes held by this row's arrays (for the window's budget).</summary>
    public long Bytes => BytesOf(Features.Sum(f => (long)(f?.Length ?? 0)) + (Input?.Length ?? 0), HitProbabilities.Length, BaseProbabilities?.Length ?? 0);

    /// <summary>
    /// Bytes of a row holding <paramref name="values"/> activation (and input) values, P(hit) and class per cache for
    /// <paramref name="caches"/> caches, and <paramref name="classes"/> base probabilities.
    /// </summary>
    internal static long BytesOf(long values, int caches, int classes) => sizeof(float) * (values + 2L * caches + classes) + 96;

    /// <summary>
    /// A copy of activations for a row that may live long in the window, on the pinned object heap: the window keeps
    /// hundreds of megabytes of them and replaces them steadily; there no collection moves them (on the ordinary heap a
    /// compacting collection of generation 2 would copy them while serving threads wait).
    /// </summary>
    internal static float[] Keep(ReadOnlySpan<float> values)
    {
        var copy = GC.AllocateUninitializedArray<float>(values.Length, pinned: true);
        values.CopyTo(copy);
        return copy;
    }
}
