using System.Diagnostics;

namespace Gati.MLNet.Torch;

/// <summary>
/// The decisions of the native numerics self-check (docs/torchsharp-runtime.md#cpu-numerics), apart from the native
/// mechanics so that every path can be tested with a runtime that fails on purpose.
/// </summary>
/// <remarks>
/// oneDNN reads its instruction-set limit once, at its first use in a process. So the first check of a process runs in
/// a child process (where nothing has been fixed yet) when a cap could matter; if the full instruction set is wrong
/// there and the capped one right, this process is capped before its own first use. The check then runs here, on the
/// kernels this process will really use. Anything still wrong switches oneDNN off (correct, slower), and anything wrong
/// after that refuses training. A limit set by the user is never overridden.
/// </remarks>
internal sealed class NativeNumericsPolicy(INumericsRuntime runtime, Func<INumericsVerdictStore?>? verdicts = null)
{
    /// <summary>The verdict meaning "the full instruction set is right".</summary>
    internal const string FullInstructionSet = "full";

    private readonly object _gate = new();
    private readonly HashSet<NumericsCase> _verified = [];
    private bool _instructionSetDecided;
    private bool _oneDnnDisabled;
    private bool _reportedDisabled;
    private string? _cap;

    /// <summary>When false, nothing is checked (the user's choice).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The most recent report (null before the first check).</summary>
    public NativeNumericsReport? LastReport { get; private set; }

    /// <summary>
    /// Checks the cases not verified yet; returns a report when something was checked (null when all were verified
    /// before) and throws <see cref="NativeNumericsException"/> when the runtime cannot be made right.
    /// </summary>
    public NativeNumericsReport? Ensure(IReadOnlyList<NumericsCase> cases)
    {
        ArgumentNullException.ThrowIfNull(cases);
        lock (_gate)
        {
            if (!Enabled)
            {
                if (_reportedDisabled) return null;
                _reportedDisabled = true;
                return LastReport = new NativeNumericsReport(NativeNumericsAction.CheckDisabled, runtime.Cpu, [], [], TimeSpan.Zero);
            }
            var pending = cases.Distinct().Where(c => !_verified.Contains(c)).ToList();
            if (pending.Count == 0) return null;

            var clock = Stopwatch.StartNew();
            var action = NativeNumericsAction.None;
            string? cap = null;
            IReadOnlyList<NumericsCaseResult> found = [];
            var user = runtime.UserInstructionSet;
            INumericsVerdictStore? store = null;
            string? key = null;
            var fromStore = false;
            if (!_instructionSetDecided)
            {
                _instructionSetDecided = true;
                if (user is null && runtime.CanCap)
                {
                    // The cap must also hold for the other shapes this process may train later (a cap cannot be lowered
                    // once oneDNN has run), so it is chosen on the known-fragile ones too.
                    var ladderCases = pending.Concat(NativeNumerics.FragileCases).Distinct().ToList();
                    store = verdicts?.Invoke();
                    key = string.Join(";", ladderCases.Select(c => c.ToString()).Order(StringComparer.Ordinal));
                    var stored = store?.Get(key);
                    if (stored == FullInstructionSet)
                    {
                        fromStore = true;
                    }
                    else if (stored is not null && NativeNumerics.CapLadder.Contains(stored))
                    {
                        runtime.CapInstructionSet(stored);
                        cap = _cap = stored;
                        action = NativeNumericsAction.CappedInstructionSet;
                        fromStore = true;
                    }
                    else if (runtime.RunInChild(pending, null) is { } full)
                    {
                        if (full.All(r => r.Passed))
                        {
                            store?.Set(key, FullInstructionSet);
                        }
                        else
                        {
                            found = full;
                            foreach (var level in NativeNumerics.CapLadder)
                            {
                                if (runtime.RunInChild(ladderCases, level) is { } capped && capped.All(r => r.Passed))
                                {
                                    runtime.CapInstructionSet(level);
                                    cap = _cap = level;
                                    action = NativeNumericsAction.CappedInstructionSet;
                                    store?.Set(key, level);
                                    break;
                                }
                            }
                        }
                    }
                }
            }

            var results = runtime.RunInProcess(pending);
            if (results.Any(r => !r.Passed))
            {
                // A stored verdict this process contradicts is forgotten: the next process probes again.
                if (fromStore && key is not null) store?.Remove(key);
                if (user is not null)
                    throw Refuse($"with {NativeNumerics.InstructionSetVariable}={user} as set by the user (Gati never overrides it), " +
                        $"libtorch computes wrong training results on {runtime.Cpu}", results);
                if (found.Count == 0) found = results;
                if (_oneDnnDisabled || !runtime.TryDisableOneDnn())
                    throw Refuse($"libtorch computes wrong training results on {runtime.Cpu}" +
                        (_oneDnnDisabled ? " even with its oneDNN kernels switched off" : " and its oneDNN kernels cannot be switched off on this platform"), results);
                _oneDnnDisabled = true;
                action = NativeNumericsAction.DisabledOneDnn;
                results = runtime.RunInProcess(pending);
                if (results.Any(r => !r.Passed))
                    throw Refuse($"libtorch computes wrong training results on {runtime.Cpu} even with its oneDNN kernels switched off", results);
            }
            else if (user is not null && action == NativeNumericsAction.None)
            {
                action = NativeNumericsAction.UserSetting;
            }
            _verified.UnionWith(pending);
            return LastReport = new NativeNumericsReport(action, runtime.Cpu, found.Where(r => !r.Passed).ToList(), results, clock.Elapsed) { Cap = cap ?? _cap, FromStoredVerdict = fromStore };
        }
    }

    private static NativeNumericsException Refuse(string why, IReadOnlyList<NumericsCaseResult> results) => new(
        $"Refusing to train: {why}. Float32 results against a float64 reference: {string.Join("; ", results.Where(r => !r.Passed))}. " +
        $"A model trained like this would be wrong or NaN. Try {NativeNumerics.InstructionSetVariable}={string.Join(", ", NativeNumerics.CapLadder)} " +
        "(one of them) set before the process starts, a GPU, or another machine; GATI_NUMERICS_CHECK=off skips this check at your own risk " +
        "(docs/torchsharp-runtime.md#cpu-numerics).", results);
}
