using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using Gati.MLNet.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// How many threads an ONNX Runtime call of one base model should use on this machine, chosen by measurement when the
/// engine options leave it open (<see cref="EarlyExitEngineOptions.SingleGraphThreads"/> null): the base model's whole
/// graph is timed at batch 1 on one thread and on every core, each call alone; the cores win when they are at least
/// 15 % faster (a wide network on large images: ResNet-18 at 224 x 224), one thread otherwise (a narrow network, where
/// waking threads costs more than splitting the work saves). Under load the engine runs a call on one thread whenever
/// as many calls as cores are already running (<see cref="OnnxRuntimeBackend"/>), so concurrent requests do not
/// oversubscribe the cores. Decided once per base model and process; reports quote <see cref="Describe"/>.
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
            var choice = Measure(baseGraph);
            Chosen.AddOrUpdate(baseGraph, choice);
            return choice;
        }
    }

    private static ThreadingChoice Measure(BaseGraph baseGraph)
    {
        var cores = Environment.ProcessorCount;
        if (cores <= 1) return new ThreadingChoice(1, double.NaN, double.NaN, cores, false);
        OnnxRuntimeEnvironment.Initialize(new EarlyExitEngineOptions());
        var model = baseGraph.FullModel(new Dictionary<string, string>());
        var dims = baseGraph.DimsAt(0);
        var input = new float[dims.Aggregate(1L, (a, b) => a * b)];
        var random = new Random(11);
        for (var i = 0; i < input.Length; i++) input[i] = (float)random.NextDouble();
        double Time(int threads)
        {
            using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = threads };
            options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
            using var session = new InferenceSession(model, options);
            using var value = OrtValue.CreateTensorValueFromMemory(input, [1, .. dims]);
            using var run = new RunOptions();
            string[] inputs = ["Image"];
            string[] outputs = ["Score"];
            OrtValue[] values = [value];
            using (session.Run(run, inputs, values, outputs)) { }
            // Enough calls for a stable median, at most about a second of measuring.
            var first = Stopwatch.StartNew();
            using (session.Run(run, inputs, values, outputs)) { }
            var calls = (int)Math.Clamp(1000 / Math.Max(first.Elapsed.TotalMilliseconds, 0.01), 5, 200);
            var times = new double[calls];
            for (var i = 0; i < calls; i++)
            {
                var start = Stopwatch.GetTimestamp();
                using (session.Run(run, inputs, values, outputs)) { }
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            Array.Sort(times);
            return times[calls / 2];
        }
        var one = Time(1);
        var all = Time(cores);
        return new ThreadingChoice(all < RequiredGain * one ? cores : 1, one, all, cores, true);
    }

    /// <summary>For reports: "2 threads per call (measured: 1 thread 51.0 ms, 2 threads 25.1 ms; 1 thread while 2 calls run)".</summary>
    public string Describe() => Measured
        ? string.Create(CultureInfo.InvariantCulture,
            $"{Threads} thread{(Threads == 1 ? "" : "s")} per call, chosen by measurement (full model at batch 1: 1 thread {OneThreadMs:F2} ms, {Cores} threads {AllCoresMs:F2} ms){(Threads > 1 ? $", 1 thread while {Threads} calls run" : "")}")
        : string.Create(CultureInfo.InvariantCulture, $"{Threads} thread{(Threads == 1 ? "" : "s")} per call (set)");
}
