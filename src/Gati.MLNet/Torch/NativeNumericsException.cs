namespace Gati.MLNet.Torch;

/// <summary>
/// The native runtime computes wrong training results on this machine and no remedy made it right: Gati refuses to
/// train rather than produce a broken model. The message names the cases that failed and what was tried.
/// </summary>
public sealed class NativeNumericsException : InvalidOperationException
{
    /// <summary>Creates the exception with the failing cases.</summary>
    public NativeNumericsException(string message, IReadOnlyList<NumericsCaseResult> results) : base(message)
    {
        Results = results;
    }

    /// <summary>The check's results as they stood when training was refused.</summary>
    public IReadOnlyList<NumericsCaseResult> Results { get; }
}
