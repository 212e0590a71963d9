namespace Gati.MLNet.Torch;

/// <summary>What the numerics policy can do to the native runtime (the real one is <see cref="OneDnnRuntime"/>).</summary>
internal interface INumericsRuntime
{
    /// <summary>oneDNN's instruction-set limit as the user set it before the process started, or null.</summary>
    string? UserInstructionSet { get; }

    /// <summary>The CPU, for messages.</summary>
    string Cpu { get; }

    /// <summary>True when capping oneDNN's instruction set can change its kernels here (x86-64 with AVX).</summary>
    bool CanCap { get; }

    /// <summary>Runs the check in a fresh child process, optionally with oneDNN capped; null when no child can run.</summary>
    IReadOnlyList<NumericsCaseResult>? RunInChild(IReadOnlyList<NumericsCase> cases, string? instructionSetCap);

    /// <summary>Runs the check in this process.</summary>
    IReadOnlyList<NumericsCaseResult> RunInProcess(IReadOnlyList<NumericsCase> cases);

    /// <summary>Caps oneDNN's instruction set for this process (effective only before oneDNN's first use).</summary>
    void CapInstructionSet(string instructionSet);

    /// <summary>Switches libtorch's oneDNN kernels off for this process; false where that is not possible.</summary>
    bool TryDisableOneDnn();
}
