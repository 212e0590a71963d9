namespace Gati.MLNet.Torch;

/// <summary>What the native numerics self-check did about the runtime.</summary>
public enum NativeNumericsAction
{
    /// <summary>Every case was right with the runtime as it was: nothing changed.</summary>
    None,

    /// <summary>
    /// The cases were wrong with oneDNN's full instruction set and right with it capped: oneDNN was capped
    /// (<c>DNNL_MAX_CPU_ISA</c>) for this process before its first use.
    /// </summary>
    CappedInstructionSet,

    /// <summary>
    /// The cases were wrong and capping was not possible in this process (oneDNN had already chosen its kernels, or no
    /// child process could be started): libtorch's oneDNN (mkldnn) kernels were switched off for this process, which
    /// is correct but slower.
    /// </summary>
    DisabledOneDnn,

    /// <summary>The user set oneDNN's instruction set; the check ran under that setting and passed.</summary>
    UserSetting,

    /// <summary>The user switched the check off (<c>GATI_NUMERICS_CHECK=off</c> or <see cref="NativeNumerics.Enabled"/>).</summary>
    CheckDisabled,
}

/// <summary>The outcome of one run of the native numerics self-check: what was found and what was done.</summary>
/// <param name="Action">What changed in the runtime.</param>
/// <param name="Cpu">The CPU checked (model name and the instruction sets that matter).</param>
/// <param name="Found">The cases that were wrong before the action (empty when none were).</param>
/// <param name="Results">The cases as they are now, after the action.</param>
/// <param name="Elapsed">Wall time of the check, child processes included.</param>
public sealed record NativeNumericsReport(NativeNumericsAction Action, string Cpu, IReadOnlyList<NumericsCaseResult> Found,
    IReadOnlyList<NumericsCaseResult> Results, TimeSpan Elapsed)
{
    /// <summary>oneDNN's instruction-set cap in force in this process (set by the check), or null.</summary>
    public string? Cap { get; init; }

    /// <summary>True when the instruction-set decision came from an earlier process's probe on this machine (no child ran).</summary>
    public bool FromStoredVerdict { get; init; }

    /// <summary>True when the runtime was changed (anything but <see cref="NativeNumericsAction.None"/>).</summary>
    public bool Changed => Action is NativeNumericsAction.CappedInstructionSet or NativeNumericsAction.DisabledOneDnn;

    /// <summary>One paragraph for a log: what was found, what was done, what it costs.</summary>
    public string Summary => Action switch
    {
        NativeNumericsAction.CappedInstructionSet when FromStoredVerdict =>
            $"Native numerics check on {Cpu}: an earlier probe on this machine found libtorch's oneDNN kernels wrong with the CPU's full " +
            $"instruction set, so oneDNN was capped to {Cap} for this process (no probe process this time); the check passes " +
            $"({Results.Count} cases, {Elapsed.TotalSeconds:F1} s). Training runs correctly but somewhat slower (docs/torchsharp-runtime.md#cpu-numerics).",
        NativeNumericsAction.CappedInstructionSet =>
            $"Native numerics check on {Cpu}: libtorch's oneDNN kernels gave wrong training results with the CPU's full instruction set " +
            $"({Describe(Found)}); oneDNN was capped to {Cap} for this process and the check now passes " +
            $"({Results.Count} cases, {Elapsed.TotalSeconds:F1} s). Training runs correctly but somewhat slower (docs/torchsharp-runtime.md#cpu-numerics).",
        NativeNumericsAction.DisabledOneDnn =>
            $"Native numerics check on {Cpu}: libtorch's oneDNN kernels gave wrong training results ({Describe(Found)}) and oneDNN's " +
            "instruction set could no longer be capped in this process, so libtorch's oneDNN kernels were switched off; the check now passes, " +
            $"but training is several times slower. Start the process with DNNL_MAX_CPU_ISA set (one of {string.Join(", ", NativeNumerics.CapLadder)}), or call " +
            "NativeNumerics.PrepareForTraining() before any other TorchSharp work, to train at full speed (docs/torchsharp-runtime.md#cpu-numerics).",
        NativeNumericsAction.UserSetting =>
            $"Native numerics check on {Cpu} with the user's {NativeNumerics.InstructionSetVariable}: {Results.Count} cases right ({Elapsed.TotalSeconds:F1} s).",
        NativeNumericsAction.CheckDisabled => "Native numerics check switched off by the user (GATI_NUMERICS_CHECK=off).",
        _ => $"Native numerics check on {Cpu}: {Results.Count} cases right ({Elapsed.TotalSeconds:F1} s).",
    };

    private static string Describe(IReadOnlyList<NumericsCaseResult> wrong) =>
        wrong.Count == 0 ? "no case" : string.Join("; ", wrong.Where(r => !r.Passed).Take(3)) + (wrong.Count(r => !r.Passed) > 3 ? "; ..." : "");
}
