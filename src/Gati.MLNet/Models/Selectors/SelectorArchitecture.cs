using System.Globalization;

namespace Gati.MLNet.Models.Selectors;

/// <summary>What a selector reads from the predictor's log-probabilities.</summary>
public enum SelectorInput
{
    /// <summary>The log-probabilities in class order (the reference's selector).</summary>
    Raw,

    /// <summary>The log-probabilities sorted in descending order: a confidence profile that does not depend on which class won.</summary>
    Sorted,
}

/// <summary>
/// A selector network: reads a predictor's k log-probabilities and outputs 2 logits (miss, hit). With
/// <see cref="Hidden"/> = 0 it is the reference's Linear(k, 2); otherwise Linear(k, hidden) → ReLU → Linear(hidden, 2).
/// </summary>
/// <param name="Input">Raw (reference) or Sorted log-probabilities.</param>
/// <param name="Hidden">Hidden units; 0 = linear.</param>
public sealed record SelectorArchitecture(SelectorInput Input = SelectorInput.Sorted, int Hidden = 16)
{
    /// <summary>The reference's selector: Linear(k, 2) over the raw log-probabilities.</summary>
    public static SelectorArchitecture Reference { get; } = new(SelectorInput.Raw, 0);

    /// <summary>The default: a small MLP over the sorted log-probabilities (higher hit rates at the same precision).</summary>
    public static SelectorArchitecture Default { get; } = new();

    /// <summary>Throws for negative hidden units.</summary>
    public void Validate()
    {
        if (Hidden < 0) throw new ArgumentOutOfRangeException(nameof(Hidden), Hidden, "Hidden units must be 0 (linear) or positive.");
        if (!Enum.IsDefined(Input)) throw new ArgumentOutOfRangeException(nameof(Input), Input, null);
    }

    /// <summary>Parameters for <paramref name="classes"/> classes.</summary>
    public long ParameterCount(int classes) => Hidden == 0 ? classes * 2L + 2 : (long)classes * Hidden + Hidden + Hidden * 2L + 2;

    /// <summary>Parses "linear", "raw-linear" (the reference), "sorted:16", "raw:32".</summary>
    public static SelectorArchitecture Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        var t = text.Trim().ToLowerInvariant();
        if (t is "reference" or "raw-linear") return Reference;
        var parts = t.Split(':');
        var input = parts[0] switch
        {
            "sorted" => SelectorInput.Sorted,
            "raw" => SelectorInput.Raw,
            _ => throw new ArgumentException($"Unknown selector '{text}': expected reference, sorted[:hidden] or raw[:hidden].", nameof(text)),
        };
        var hidden = parts.Length > 1 && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var h) ? h
            : parts.Length > 1 ? throw new ArgumentException($"Selector '{text}': '{parts[1]}' is not a number of hidden units.", nameof(text)) : 16;
        return new SelectorArchitecture(input, hidden);
    }

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{(Input == SelectorInput.Sorted ? "sorted" : "raw")}:{(Hidden == 0 ? "linear" : Hidden.ToString(CultureInfo.InvariantCulture))}");
}
