using System.Diagnostics;
using System.Globalization;
using CsCheck;
using Xunit.Abstractions;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>
/// Fixed-seed property and fuzz runs over CsCheck generators. Case i of a target is generated from
/// <c>new PCG(stream, i)</c> (the stream derived from the target's name), so every machine runs the same cases and a
/// failure names the one that reproduces it. CI runs a few seconds per target; the long run is the same test with more
/// cases: <c>GATI_FUZZ_ITERATIONS=N</c>. <c>GATI_FUZZ_CASE=i</c> runs case i alone; <c>GATI_FUZZ_REPORT=file</c>
/// appends each target's summary line to a file (docs/hardening.md quotes them).
/// </summary>
public static class Fuzz
{
    public const string IterationsVariable = "GATI_FUZZ_ITERATIONS";

    /// <summary>A case that runs longer than this is reported as a hang (it is far above any case's real time).</summary>
    private static readonly TimeSpan HangTimeout = TimeSpan.FromMinutes(2);

    /// <summary>Runs <paramref name="property"/> on cases 0..n-1 of <paramref name="generator"/>; throws on the first failures.</summary>
    /// <param name="target">Names the target in messages and picks its random stream.</param>
    /// <param name="generator">The case generator.</param>
    /// <param name="property">Throws when a case breaks the property.</param>
    /// <param name="ciIterations">Cases run unless GATI_FUZZ_ITERATIONS says otherwise.</param>
    /// <param name="output">Where the summary line goes.</param>
    /// <param name="describe">A short description of a case for failure messages.</param>
    public static void Run<T>(string target, Gen<T> generator, Action<T> property, int ciIterations, ITestOutputHelper? output = null,
        Func<T, string>? describe = null) =>
        Run(target, generator, input =>
        {
            property(input);
            return "passed";
        }, ciIterations, output, describe);

    /// <summary>As above; <paramref name="property"/> returns the outcome of a case (e.g. "read", "refused"), tallied in the summary.</summary>
    public static void Run<T>(string target, Gen<T> generator, Func<T, string> property, int ciIterations, ITestOutputHelper? output = null,
        Func<T, string>? describe = null)
    {
        var iterations = int.TryParse(Environment.GetEnvironmentVariable(IterationsVariable), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0
            ? n
            : ciIterations;
        var only = int.TryParse(Environment.GetEnvironmentVariable("GATI_FUZZ_CASE"), NumberStyles.None, CultureInfo.InvariantCulture, out var c) ? c : (int?)null;
        var stream = Stream(target);
        var failures = new List<string>();
        var outcomes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var clock = Stopwatch.StartNew();
        var cases = 0;
        for (var i = only ?? 0; i < (only is null ? iterations : only.Value + 1) && failures.Count < 3; i++)
        {
            var input = generator.Generate(new PCG(stream, (ulong)i), null, out _);
            cases++;
            // Each case runs on a worker so that a hang fails the test instead of stalling the run.
            var run = Task.Run(() => property(input));
            string? failure = null;
            try
            {
                if (!run.Wait(HangTimeout)) failure = $"did not finish in {HangTimeout.TotalMinutes} min (hang)";
                else outcomes[run.Result] = outcomes.GetValueOrDefault(run.Result) + 1;
            }
            catch (AggregateException ex)
            {
                failure = ex.InnerException!.ToString();
            }
            if (failure is not null)
                failures.Add($"{target} case {i} (GATI_FUZZ_CASE={i}) {describe?.Invoke(input) ?? input?.ToString()}: {failure}");
        }
        var summary = string.Create(CultureInfo.InvariantCulture,
            $"fuzz {target}: {cases} cases ({string.Join(", ", outcomes.Select(o => $"{o.Value} {o.Key}"))}), {failures.Count} failures, {clock.Elapsed.TotalSeconds:F1} s (PCG stream {stream}, cases {only ?? 0}..{(only ?? iterations - 1)})");
        output?.WriteLine(summary);
        if (Environment.GetEnvironmentVariable("GATI_FUZZ_REPORT") is { Length: > 0 } report)
            File.AppendAllText(report, summary + Environment.NewLine);
        if (failures.Count > 0) throw new Xunit.Sdk.XunitException(summary + Environment.NewLine + string.Join(Environment.NewLine + Environment.NewLine, failures));
    }

    /// <summary>Bytes allocated on this thread by <paramref name="action"/> (memory bounds of hostile inputs).</summary>
    public static long AllocatedBytes(Action action)
    {
        var before = GC.GetAllocatedBytesForCurrentThread();
        action();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    /// <summary>A stable stream number per target name (string.GetHashCode differs between processes).</summary>
    private static uint Stream(string target)
    {
        var hash = 2166136261u;
        foreach (var ch in target) hash = (hash ^ ch) * 16777619u;
        return hash;
    }
}
