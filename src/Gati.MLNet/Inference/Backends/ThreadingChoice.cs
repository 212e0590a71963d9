using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using Gati.MLNet.Models;
using Gati.MLNet.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// How many threads an ONNX Runtime call of one base model should use on this machine, chosen by measurement when the
/// engine options leave it open (<see cref="EarlyExitEngineOptions.SingleGraphThreads"/> null): the base model's whole
/// graph is timed at batch 1 on one thread and on every core, each call alone and the two settings alternating; the
/// cores win when they are at least 15 % faster (a wide network on large images: ResNet-18 at 224 x 224), one thread
/// otherwise (a narrow network, where waking threads costs more than splitting the work saves). Under load the engine
/// runs a call on one thread whenever another call is already running (<see cref="OnnxRuntimeBackend"/>), so
/// concurrent requests share the cores instead of each asking for all of them. Decided once per base model and process; reports quote <see cref="Describe"/>.
/// </summary>
internal sealed record ThreadingChoice(int Threads, double OneThreadMs, double AllCoresMs, int Cores, bool Measured)
{
    private const double RequiredGain = 0.85;

    private static readonly ConditionalWeakTable<BaseGraph, ThreadingChoice> Chosen = new();
    private static readonly object Gate = new();

    /// <summary>The threads an explicit setting asks for (not measured).</summary>
    public static ThreadingChoice Fixed(int threads) => new(threads, double.NaN, double.NaN, Environment.ProcessorCount, false);

    /// <summary>The choice for <paramref name="baseGraph"/>: measured on first use, then remembered.</summary>
    public static ThreadingChoice For(BaseGraph baseGraph, EarlyExitEngineOptions options)
    {
        if (options.SingleGraphThreads is { } threads) return Fixed(threads);
        lock (Gate)
        {
            if (Chosen.TryGetValue(baseGraph, out var known)) return known;
            var choice = Measure(baseGraph, options);
            Chosen.AddOrUpdate(baseGraph, choice);
            return choice;
        }
    }

    private static ThreadingChoice Measure(BaseGraph baseGraph, EarlyExitEngineOptions options)
    {
        var cores = Environment.ProcessorCount;
        if (cores <= 1) return new ThreadingChoice(1, double.NaN, double.NaN, cores, true);
        OnnxRuntimeEnvironment.Initialize(options.OnnxThreading); // the caller's process-wide settings, if it is the first
        var model = baseGraph.FullModel(new Dictionary<string, string>());
        var dims = baseGraph.DimsAt(0);
        var input = new float[dims.Aggregate(1L, (a, b) => a * b)];
        var random = new Random(11);
        for (var i = 0; i < input.Length; i++) input[i] = (float)random.NextDouble();
        InferenceSession Open(int threads)
        {
            using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = threads };
            options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
            return new InferenceSession(model, options);
        }
        using var single = Open(1);
        using var parallel = Open(cores);
        using var value = OrtValue.CreateTensorValueFromMemory(input, [1, .. dims]);
        using var run = new RunOptions();
        string[] inputs = ["Image"];
        string[] outputs = ["Score"];
        OrtValue[] values = [value];
        double Call(InferenceSession session)
        {
            var start = Stopwatch.GetTimestamp();
            using (session.Run(run, inputs, values, outputs)) { }
            return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Call(single);
        Call(parallel);
        // Enough calls for a stable quantile, at most about two seconds of measuring; the two settings alternate.
        var calls = (int)Math.Clamp(1000 / Math.Max(Call(single), 0.01), 5, 200);
        var oneTimes = new double[calls];
        var allTimes = new double[calls];
        for (var i = 0; i < calls; i++)
        {
            oneTimes[i] = Call(single);
            allTimes[i] = Call(parallel);
        }
        var one = Fast(oneTimes);
        var all = Fast(allTimes);
        return new ThreadingChoice(all < RequiredGain * one ? cores : 1, one, all, cores, true);
    }

    /// <summary>
    /// What a setting can do: the time the fastest fifth of its calls beat. Other load on the machine only ever slows a
    /// call, and it does not slow both settings alike: a burst that takes one of 2 cores leaves a one-thread call its
    /// core but makes a two-thread call wait for the other. Compared by their medians, the pretrained ResNet-18 once
    /// measured 40.96 ms on 1 thread and 34.99 ms on 2 in such a burst (20.12 ms minutes before), and was served on
    /// one thread at 0.83x of the full model.
    /// </summary>
    internal static double Fast(double[] times)
    {
        var sorted = times.Order().ToArray();
        return sorted[sorted.Length / 5];
    }

    /// <summary>For reports, e.g. "2 threads per call, chosen by measurement (full model at batch 1: 1 thread 51.00 ms, 2 threads 25.10 ms), 1 thread for a call made while another runs".</summary>
    public string Describe() => Measured && Cores <= 1
        ? "1 thread per call (one core)"
        : Measured
        ? string.Create(CultureInfo.InvariantCulture,
            $"{Threads} thread{(Threads == 1 ? "" : "s")} per call, chosen by measurement (full model at batch 1: 1 thread {OneThreadMs:F2} ms, {Cores} threads {AllCoresMs:F2} ms){(Threads > 1 ? ", 1 thread for a call made while another runs" : "")}")
        : string.Create(CultureInfo.InvariantCulture, $"{Threads} thread{(Threads == 1 ? "" : "s")} per call (set)");
}
