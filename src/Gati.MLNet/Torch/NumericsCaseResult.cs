using System.Globalization;

namespace Gati.MLNet.Torch;

/// <summary>The outcome of one case: the worst relative error over its repeats and outputs.</summary>
/// <param name="Case">The case.</param>
/// <param name="WorstRelativeError">max |float32 - float64| / max |float64| over every output and repeat; infinity when a value was not finite.</param>
/// <param name="WorstOutput">Which result was worst: output, input gradient, weight gradient or bias gradient.</param>
public sealed record NumericsCaseResult(NumericsCase Case, double WorstRelativeError, string WorstOutput)
{
    /// <summary>True when every output of every repeat agreed within <see cref="NumericsCheck.Tolerance"/>.</summary>
    public bool Passed => WorstRelativeError <= NumericsCheck.Tolerance;

    /// <summary>One line for logs and errors.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Case}: {(Passed ? "ok" : "WRONG")} (worst relative error {WorstRelativeError:G3} in the {WorstOutput})");
}
