using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Models;
using Gati.MLNet.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

public sealed class NativeNumericsTests
{
    private static readonly NumericsCase Small = NumericsCase.Convolution(2, 3, 4, 8, 8, 3, 1);
    private static readonly NumericsCase Other = NumericsCase.Linear(4, 16, 10);

    /// <summary>A runtime whose answers the test decides: which configurations compute right, what was done.</summary>
    private sealed class ScriptedRuntime : INumericsRuntime
    {
        public string? UserInstructionSet { get; init; }
        public bool CanCap { get; init; } = true;
        public bool ChildAvailable { get; init; } = true;
        public bool FullInstructionSetRight { get; init; } = true;

        /// <summary>The caps (including a user's setting) under which results are right.</summary>
        public string[] RightCaps { get; init; } = ["AVX2", "AVX", "SSE41", "AVX512_CORE"];
        public bool WithoutOneDnnRight { get; init; } = true;
        public bool CanDisableOneDnn { get; init; } = true;
        public string? Cap { get; private set; }
        public bool OneDnnOff { get; private set; }
        public List<string> Calls { get; } = [];
        public string Cpu => "test CPU";

        private bool Right(string? cap) => cap is null ? FullInstructionSetRight : RightCaps.Contains(cap);

        private bool RightNow => OneDnnOff ? WithoutOneDnnRight : Right(Cap ?? UserInstructionSet);

        private static List<NumericsCaseResult> Results(IReadOnlyList<NumericsCase> cases, bool right) =>
            cases.Select(c => new NumericsCaseResult(c, right ? 1e-7 : 0.3, "input gradient")).ToList();

        public IReadOnlyList<NumericsCaseResult>? RunInChild(IReadOnlyList<NumericsCase> cases, string? cap)
        {
            Calls.Add($"child {cap ?? "full"}");
            return ChildAvailable ? Results(cases, Right(cap)) : null;
        }

        public IReadOnlyList<NumericsCaseResult> RunInProcess(IReadOnlyList<NumericsCase> cases)
        {
            Calls.Add("in-process");
            return Results(cases, RightNow);
        }

        public void CapInstructionSet(string instructionSet)
        {
            Calls.Add($"cap {instructionSet}");
            Cap = instructionSet;
        }

        public bool TryDisableOneDnn()
        {
            Calls.Add("disable oneDNN");
            OneDnnOff = CanDisableOneDnn;
            return CanDisableOneDnn;
        }
    }

    [Fact]
    public void RelativeError_DeliberatelyWrongResult_IsAboveTolerance()
    {
        using var scope = NewDisposeScope();
        var reference = arange(12, ScalarType.Float64).reshape(3, 4);
        Assert.True(NumericsCheck.RelativeError(reference.to(ScalarType.Float32), reference) < 1e-7);
        var wrong = reference.clone();
        wrong[1, 2] = tensor(0.0, ScalarType.Float64); // one element off by 6 of a maximum of 11
        Assert.True(NumericsCheck.RelativeError(wrong, reference) > NumericsCheck.Tolerance);
        var nan = reference.clone();
        nan[0, 0] = tensor(double.NaN, ScalarType.Float64);
        Assert.Equal(double.PositiveInfinity, NumericsCheck.RelativeError(nan, reference));
        Assert.Equal(double.PositiveInfinity, NumericsCheck.RelativeError(reference.reshape(4, 3), reference));
    }

    [Fact]
    public void Run_SmallCasesOfEveryOperation_PassWithErrorsFarBelowTolerance()
    {
        var cases = new[]
        {
            NumericsCase.Convolution(4, 3, 5, 9, 7, 3, 2),
            NumericsCase.Convolution(3, 4, 6, 8, 8, 1, 1),
            NumericsCase.BatchNorm(4, 3, 5, 5),
            NumericsCase.Linear(5, 12, 7),
        };
        var results = NumericsCheck.Run(cases, repeats: 2);
        Assert.Equal(cases, results.Select(r => r.Case));
        Assert.All(results, r => Assert.True(r.Passed && r.WorstRelativeError < 1e-4, r.ToString()));
    }

    [Theory]
    [InlineData("conv2d:b64:1x28x28->8:k3s1")]
    [InlineData("batchnorm2d:b128:16x14x14")]
    [InlineData("linear:b64:1024->10")]
    public void Case_ToStringThenParse_RoundTrips(string text)
    {
        Assert.Equal(text, NumericsCase.Parse(text).ToString());
    }

    [Theory]
    [InlineData("conv2d:b64:1x28x28")]
    [InlineData("pool:b1:1x1x1")]
    [InlineData("linear:bx:1->2")]
    public void Parse_Garbage_ThrowsFormatException(string text)
    {
        Assert.Throws<FormatException>(() => NumericsCase.Parse(text));
    }

    [Fact]
    public void ForResNet_BasicBlocks_CoverStemFirstStageAndTheDownsamplingBlock()
    {
        var cases = NativeNumerics.ForResNet(new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 28, 28), 10, 8), 64);
        Assert.Contains(NumericsCase.Convolution(64, 1, 8, 28, 28, 3, 1), cases);
        Assert.Contains(NumericsCase.Convolution(64, 8, 8, 28, 28, 3, 1), cases);
        Assert.Contains(NumericsCase.Convolution(64, 8, 16, 28, 28, 3, 2), cases);
        Assert.Contains(NumericsCase.Convolution(64, 16, 16, 14, 14, 3, 1), cases);
        Assert.Contains(NumericsCase.Convolution(64, 8, 16, 28, 28, 1, 2), cases);
        Assert.Contains(NumericsCase.BatchNorm(64, 8, 28, 28), cases);
        Assert.Equal(cases.Count, cases.Distinct().Count());
    }

    [Fact]
    public void ForResNet_Bottleneck_UsesExpandedWidths()
    {
        var cases = NativeNumerics.ForResNet(new ResNetConfig(ResNetArchitecture.ResNet50, new TensorShape(3, 32, 32), 10, 16), 32);
        Assert.Contains(NumericsCase.Convolution(32, 16, 64, 32, 32, 1, 1), cases);
        Assert.Contains(NumericsCase.Convolution(32, 64, 128, 32, 32, 1, 2), cases);
        Assert.Contains(NumericsCase.BatchNorm(32, 64, 32, 32), cases);
    }

    [Fact]
    public void Policy_RightEverywhere_ChangesNothingAndChecksEachCaseOnce()
    {
        var runtime = new ScriptedRuntime();
        var policy = new NativeNumericsPolicy(runtime);
        var report = policy.Ensure([Small]);
        Assert.Equal(NativeNumericsAction.None, report!.Action);
        Assert.Null(runtime.Cap);
        Assert.Equal(["child full", "in-process"], runtime.Calls);
        Assert.Null(policy.Ensure([Small]));
        Assert.Equal(NativeNumericsAction.None, policy.Ensure([Small, Other])!.Action);
        Assert.Equal(["child full", "in-process", "in-process"], runtime.Calls); // the instruction set is decided once
    }

    [Fact]
    public void Policy_FullInstructionSetWrongCapRight_CapsBeforeTheInProcessCheck()
    {
        var runtime = new ScriptedRuntime { FullInstructionSetRight = false };
        var report = new NativeNumericsPolicy(runtime).Ensure([Small, Other])!;
        Assert.Equal(NativeNumericsAction.CappedInstructionSet, report.Action);
        Assert.Equal(["child full", "child AVX2", "cap AVX2", "in-process"], runtime.Calls);
        Assert.Equal(2, report.Found.Count);
        Assert.All(report.Results, r => Assert.True(r.Passed));
        Assert.Contains("capped to AVX2", report.Summary);
    }

    [Fact]
    public void Policy_Avx2AlsoWrong_TakesTheNextCapOnTheFragileShapesToo()
    {
        var runtime = new ScriptedRuntime { FullInstructionSetRight = false, RightCaps = ["AVX", "SSE41"] };
        var report = new NativeNumericsPolicy(runtime).Ensure([Small])!;
        Assert.Equal(NativeNumericsAction.CappedInstructionSet, report.Action);
        Assert.Equal("AVX", report.Cap);
        Assert.Equal(["child full", "child AVX2", "child AVX", "cap AVX", "in-process"], runtime.Calls);
        Assert.Contains("capped to AVX", report.Summary);
    }

    /// <summary>A verdict store in memory.</summary>
    private sealed class MemoryVerdicts : INumericsVerdictStore
    {
        public Dictionary<string, string> Entries { get; } = [];

        public string? Get(string key) => Entries.GetValueOrDefault(key);

        public void Set(string key, string verdict) => Entries[key] = verdict;

        public void Remove(string key) => Entries.Remove(key);
    }

    [Fact]
    public void Policy_StoredVerdict_NextProcessSkipsTheChildren()
    {
        var verdicts = new MemoryVerdicts();
        var first = new ScriptedRuntime { FullInstructionSetRight = false, RightCaps = ["AVX", "SSE41"] };
        Assert.False(new NativeNumericsPolicy(first, () => verdicts).Ensure([Small])!.FromStoredVerdict);
        Assert.Equal("AVX", Assert.Single(verdicts.Entries).Value);

        // A later process on the same machine: the cap from the store, no child, and the in-process check still runs.
        var second = new ScriptedRuntime { FullInstructionSetRight = false, RightCaps = ["AVX", "SSE41"] };
        var report = new NativeNumericsPolicy(second, () => verdicts).Ensure([Small])!;
        Assert.True(report.FromStoredVerdict);
        Assert.Equal("AVX", report.Cap);
        Assert.Equal(["cap AVX", "in-process"], second.Calls);

        // Right with the full instruction set: stored as such, and a later process runs no child at all.
        var healthy = new MemoryVerdicts();
        new NativeNumericsPolicy(new ScriptedRuntime(), () => healthy).Ensure([Small]);
        var again = new ScriptedRuntime();
        Assert.Equal(NativeNumericsAction.None, new NativeNumericsPolicy(again, () => healthy).Ensure([Small])!.Action);
        Assert.Equal(["in-process"], again.Calls);
    }

    [Fact]
    public void Policy_StoredVerdictThatTheProcessContradicts_IsForgotten()
    {
        var verdicts = new MemoryVerdicts();
        new NativeNumericsPolicy(new ScriptedRuntime(), () => verdicts).Ensure([Small]);
        // The same machine now computes wrong results with the full instruction set (the fault is not deterministic).
        var runtime = new ScriptedRuntime { FullInstructionSetRight = false };
        var report = new NativeNumericsPolicy(runtime, () => verdicts).Ensure([Small])!;
        Assert.Equal(NativeNumericsAction.DisabledOneDnn, report.Action); // too late to cap: oneDNN off, correct
        Assert.Empty(verdicts.Entries);                                   // the next process probes again
    }

    [Fact]
    public void FileVerdictStore_KeysAreMachineBound_AndCorruptFilesAreIgnored()
    {
        using var temp = new TempDirectory();
        var path = temp.File("verdicts.json");
        var here = new FileVerdictStore(path, "cpu A / libtorch 1");
        here.Set("conv2d:b64:1->8:28x28:k3s1", "AVX");
        Assert.Equal("AVX", new FileVerdictStore(path, "cpu A / libtorch 1").Get("conv2d:b64:1->8:28x28:k3s1"));
        Assert.Null(new FileVerdictStore(path, "cpu B / libtorch 1").Get("conv2d:b64:1->8:28x28:k3s1"));
        here.Remove("conv2d:b64:1->8:28x28:k3s1");
        Assert.Null(here.Get("conv2d:b64:1->8:28x28:k3s1"));

        File.WriteAllText(path, "{ not json");
        Assert.Null(here.Get("x"));
        here.Set("x", "full");
        Assert.Equal("full", here.Get("x"));
    }

    [Fact]
    public void Policy_CapNoLongerPossible_SwitchesOneDnnOffAndRechecks()
    {
        // The process used oneDNN before the check: the child says "cap", but the cap does not reach this process.
        var runtime = new ScriptedRuntime { FullInstructionSetRight = false, ChildAvailable = false };
        var report = new NativeNumericsPolicy(runtime).Ensure([Small])!;
        Assert.Equal(NativeNumericsAction.DisabledOneDnn, report.Action);
        Assert.Equal(["child full", "in-process", "disable oneDNN", "in-process"], runtime.Calls);
        Assert.Single(report.Found);
        Assert.Contains("switched off", report.Summary);
    }

    [Fact]
    public void Policy_NothingHelps_RefusesWithTheFailingCases()
    {
        var runtime = new ScriptedRuntime { FullInstructionSetRight = false, RightCaps = [], WithoutOneDnnRight = false };
        var error = Assert.Throws<NativeNumericsException>(() => new NativeNumericsPolicy(runtime).Ensure([Small]));
        Assert.Contains("Refusing to train", error.Message);
        Assert.Contains(Small.ToString(), error.Message);
        Assert.Contains("even with its oneDNN kernels switched off", error.Message);
        Assert.Null(runtime.Cap);
    }

    [Fact]
    public void Policy_OneDnnCannotBeSwitchedOff_Refuses()
    {
        var runtime = new ScriptedRuntime { FullInstructionSetRight = false, RightCaps = [], CanDisableOneDnn = false };
        var error = Assert.Throws<NativeNumericsException>(() => new NativeNumericsPolicy(runtime).Ensure([Small]));
        Assert.Contains("cannot be switched off", error.Message);
    }

    [Fact]
    public void Policy_UserSetInstructionSet_IsNeverOverridden()
    {
        var right = new ScriptedRuntime { UserInstructionSet = "AVX512_CORE" };
        Assert.Equal(NativeNumericsAction.UserSetting, new NativeNumericsPolicy(right).Ensure([Small])!.Action);
        Assert.Equal(["in-process"], right.Calls);

        var wrong = new ScriptedRuntime { UserInstructionSet = "AVX512_CORE", RightCaps = [] };
        var error = Assert.Throws<NativeNumericsException>(() => new NativeNumericsPolicy(wrong).Ensure([Small]));
        Assert.Contains("DNNL_MAX_CPU_ISA=AVX512_CORE as set by the user", error.Message);
        Assert.DoesNotContain("disable oneDNN", wrong.Calls);
    }

    [Fact]
    public void Policy_NothingToCap_RunsNoChildProcess()
    {
        var runtime = new ScriptedRuntime { CanCap = false };
        Assert.Equal(NativeNumericsAction.None, new NativeNumericsPolicy(runtime).Ensure([Small])!.Action);
        Assert.Equal(["in-process"], runtime.Calls);
    }

    [Fact]
    public void Policy_SwitchedOff_ReportsOnceAndChecksNothing()
    {
        var runtime = new ScriptedRuntime { FullInstructionSetRight = false };
        var policy = new NativeNumericsPolicy(runtime) { Enabled = false };
        Assert.Equal(NativeNumericsAction.CheckDisabled, policy.Ensure([Small])!.Action);
        Assert.Null(policy.Ensure([Other]));
        Assert.Empty(runtime.Calls);
    }

    [Fact]
    public void ChildProbe_RealRuntime_RunsInAFreshProcessAndReturnsEveryCase()
    {
        // Which caps compute right depends on the CPU, so only the mechanics are asserted: a result per case, and the
        // linear layer (no oneDNN convolution) right under the lowest cap.
        var cases = new[] { NumericsCase.Convolution(2, 2, 3, 6, 6, 3, 1), NumericsCase.Linear(3, 8, 4) };
        var results = new OneDnnRuntime().RunInChild(cases, NativeNumerics.CapLadder[^1]);
        Assert.NotNull(results);
        Assert.Equal(cases, results!.Select(r => r.Case));
        Assert.True(results[1].Passed, results[1].ToString());
        Assert.All(results, r => Assert.False(double.IsNaN(r.WorstRelativeError)));
    }

    [Fact]
    public void TestProcess_WasCheckedAtStartUp_AndTrainsCorrectly()
    {
        // NumericsSetup ran the check before any test; whatever this CPU needed, the cases now pass in this process.
        var report = NativeNumerics.LastReport;
        Assert.NotNull(report);
        Assert.All(report!.Results, r => Assert.True(r.Passed, r.ToString()));
        Assert.Null(NativeNumerics.PrepareForTraining()); // already verified: nothing runs twice
    }
}
