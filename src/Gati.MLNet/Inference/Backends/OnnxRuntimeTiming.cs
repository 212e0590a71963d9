using System.Diagnostics;
using Gati.MLNet.Models;
using Gati.MLNet.Onnx;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// Times the parts of a base model (cut point to cut point, cut out of its ONNX graph) and its candidate caches on ONNX
/// Runtime, for the cache optimizer's latency model: each part is its own session with the engine's session settings. A
/// session call costs a fixed overhead (measured on an identity graph) that the engine pays once per segment, not once
/// per part: part timings are net of it, the head keeps it (the final segment's call), and each cache keeps it (each
/// cache adds a segment) unless batch 1 runs as one call (the single graph).
/// </summary>
internal static class OnnxRuntimeTiming
{
    /// <summary>
    /// The base model's parts at <paramref name="batch"/> rows, ms: [p] for p &lt; L computes cut point p + 1 from cut
    /// point p (0: the input), [L] is the head with softmax.
    /// </summary>
    public static double[] Parts(BaseGraph baseGraph, int batch, int runs, EarlyExitEngineOptions options)
    {
        var cuts = baseGraph.Cuts.Count;
        var parts = new double[cuts + 1];
        var threads = ThreadingChoice.For(baseGraph, options).Threads;
        var overhead = CallOverhead(batch, runs, options, threads);
        for (var part = 0; part <= cuts; part++)
        {
            var graph = new OnnxGraphBuilder($"part{part}");
            var dims = baseGraph.DimsAt(part);
            var x = graph.Input("Input", TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
            var output = baseGraph.Emit(graph, part, part + 1, x, "base/");
            long[] outputShape;
            if (part == cuts)
            {
                output = graph.Node("Softmax", [output], ("axis", 1));
                outputShape = [batch, baseGraph.ClassCount];
            }
            else
            {
                outputShape = [batch, .. baseGraph.DimsAt(part + 1)];
            }
            graph.Output(graph.Rename(output, "Output"), TensorProto.Types.DataType.Float, outputShape.Skip(1).Select(d => (long?)d).Prepend(null).ToArray());
            var ms = Time(graph.ToBytes(), [batch, .. dims], [("Output", outputShape, false)], runs, options, threads);
            parts[part] = part == cuts ? ms : Math.Max(0, ms - overhead);
        }
        return parts;
    }

    /// <summary>
    /// A cache's lookup (predictor, selector, decision) on <paramref name="batch"/> rows of its cut point's features, ms.
    /// It keeps the call overhead (a cache adds a segment call), except at batch 1 when the engine serves batch 1 with
    /// its single graph (<see cref="EarlyExitEngineOptions.SingleGraphAtBatchOne"/>), where a cache adds nodes to the
    /// one call, not a call.
    /// </summary>
    /// <param name="cache">The cache.</param>
    /// <param name="batch">Rows per call.</param>
    /// <param name="runs">Timed calls (median kept).</param>
    /// <param name="options">The engine's settings.</param>
    /// <param name="threads">The threads the engine's calls use (<see cref="ThreadingChoice"/> of its base model).</param>
    public static double Cache(LearnedCache cache, int batch, int runs, EarlyExitEngineOptions options, int threads)
    {
        var shape = cache.FeatureShape;
        var classes = cache.Classes;
        var graph = new OnnxGraphBuilder("cache");
        var x = graph.Input("Input", TensorProto.Types.DataType.Float, null, shape.Channels, shape.Height, shape.Width);
        var (logProbabilities, hitProbability) = CacheGraph.Parse(cache.Layer, cache.Graph).Emit(graph, x, "c/");
        var hit = graph.Rename(graph.Node("GreaterOrEqual", [hitProbability, graph.Constant("threshold", [(float)cache.Calibration.Threshold], 1)]), "Hit");
        var probabilities = graph.Rename(graph.Node("Exp", [logProbabilities]), "Probabilities");
        graph.Output(probabilities, TensorProto.Types.DataType.Float, null, classes);
        graph.Output(hit, TensorProto.Types.DataType.Bool, (long?)null);
        var ms = Time(graph.ToBytes(), [batch, shape.Channels, shape.Height, shape.Width], [("Probabilities", [batch, classes], false), ("Hit", [batch], true)], runs, options, threads);
        return batch == 1 && options.SingleGraphAtBatchOne ? Math.Max(0, ms - CallOverhead(batch, runs, options, threads)) : ms;
    }

    private static double CallOverhead(int batch, int runs, EarlyExitEngineOptions options, int threads)
    {
        var graph = new OnnxGraphBuilder("identity");
        var x = graph.Input("Input", TensorProto.Types.DataType.Float, null, 1);
        graph.Output(graph.Rename(x, "Output"), TensorProto.Types.DataType.Float, null, 1);
        return Time(graph.ToBytes(), [batch, 1], [("Output", [batch, 1], false)], runs, options, threads);
    }

    private static double Time(byte[] model, long[] inputShape, (string Name, long[] Shape, bool Bool)[] outputs, int runs, EarlyExitEngineOptions options,
        int threads)
    {
        using var sessionOptions = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        // Batch 1 is served by the single graph's session where the engine has one: time it with that session's threads.
        if (inputShape[0] == 1 && options.SingleGraphAtBatchOne) OnnxRuntimeEnvironment.ConfigureSingleGraph(sessionOptions, options.OnnxThreading, threads);
        else OnnxRuntimeEnvironment.Configure(sessionOptions, options.OnnxThreading, threads);
        using var session = new InferenceSession(model, sessionOptions);
        var random = new Random(7);
        var input = new float[inputShape.Aggregate(1L, (a, b) => a * b)];
        for (var i = 0; i < input.Length; i++) input[i] = (float)random.NextDouble();
        using var inputValue = OrtValue.CreateTensorValueFromMemory(input, inputShape);
        var outputValues = outputs.Select(o => o.Bool
            ? OrtValue.CreateTensorValueFromMemory(new bool[o.Shape.Aggregate(1L, (a, b) => a * b)], o.Shape)
            : OrtValue.CreateTensorValueFromMemory(new float[o.Shape.Aggregate(1L, (a, b) => a * b)], o.Shape)).ToArray();
        try
        {
            using var runOptions = new RunOptions();
            string[] inputNames = ["Input"];
            var outputNames = outputs.Select(o => o.Name).ToArray();
            OrtValue[] inputValues = [inputValue];
            for (var i = 0; i < 5; i++) session.Run(runOptions, inputNames, inputValues, outputNames, outputValues);
            var times = new double[runs];
            for (var i = 0; i < runs; i++)
            {
                var start = Stopwatch.GetTimestamp();
                session.Run(runOptions, inputNames, inputValues, outputNames, outputValues);
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            Array.Sort(times);
            return times[runs / 2];
        }
        finally
        {
            foreach (var value in outputValues) value.Dispose();
        }
    }
}
