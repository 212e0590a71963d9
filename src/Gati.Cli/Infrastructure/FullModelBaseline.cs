using Gati.MLNet.Inference.Backends;
using Microsoft.ML.OnnxRuntime;

namespace Gati.Cli.Infrastructure;

/// <summary>One way of running the full base model: labels (1-based keys, as the engines give them) for a batch.</summary>
internal sealed record FullModelRunner(string Name, Func<float[], int, uint[]> Predict, IDisposable Owner);

/// <summary>
/// The full model a speedup is measured against: the fastest of the ways to run it on these cores, raced at each batch
/// size before the timed comparison. On ONNX Runtime: Gati's engine without caches (its measured threading) and the
/// whole graph in a plain session on one thread, on every core, and on every core with spinning threads (ONNX
/// Runtime's own defaults). On TorchSharp: the engine without caches. A speedup against anything slower would flatter.
/// </summary>
internal sealed class FullModelBaseline : IDisposable
{
    private const int RaceCalls = 30;

    /// <summary>
    /// Consecutive calls one runner makes before the next takes its turn, wherever two ways of running are timed against
    /// each other (here, evaluate-early-exit, optimize's check). A session whose threads spin (ONNX Runtime's default)
    /// keeps a core busy for a while after each call: alternating call by call, whoever runs next pays for it (on 2 cores
    /// it made the engine's batch-1 calls 9-10 ms slower than in a run of their own). Blocks leave that cost at one call
    /// in ten, and still let both see the same machine state over the run.
    /// </summary>
    internal const int BlockCalls = 10;

    /// <summary>
    /// The order in which two ways of running take turns over <paramref name="calls"/> calls: blocks of
    /// <see cref="BlockCalls"/> calls [First, End), each run by one way then the other (<c>FirstWay</c> true: the first
    /// way goes first), the order alternating from block to block.
    /// </summary>
    internal static IEnumerable<(bool FirstWay, int First, int End)> Turns(int calls)
    {
        for (var block = 0; block * BlockCalls < calls; block++)
        {
            var first = block * BlockCalls;
            var end = Math.Min(calls, first + BlockCalls);
            yield return (block % 2 == 0, first, end);
            yield return (block % 2 != 0, first, end);
        }
    }

    private readonly List<FullModelRunner> _runners = [];

    public FullModelBaseline(MLContext context, ITransformer baseTransformer, BaseModel baseModel, EarlyExitEngineOptions serving)
    {
        var engine = context.Gati().CreateEarlyExitEngine<ImageInput, EarlyExitPrediction>(baseTransformer, serving);
        _runners.Add(new FullModelRunner($"Gati engine without caches ({engine.BackendDescription})",
            (images, n) => engine.Predict(images.AsSpan(0, n * baseModel.InputShape.Size), n).Select(p => p.PredictedLabel).ToArray(), engine));
        if (!ExecutionBackends.For(serving.Backend).RunsOnnxGraph) return;
        var graph = baseModel.Graph.FullModel(new Dictionary<string, string>());
        var cores = Environment.ProcessorCount;
        _runners.Add(Plain(graph, baseModel, "ONNX Runtime session, whole graph, 1 thread", 1, spinning: false));
        if (cores > 1)
        {
            _runners.Add(Plain(graph, baseModel, $"ONNX Runtime session, whole graph, {cores} threads", cores, spinning: false));
            _runners.Add(Plain(graph, baseModel, $"ONNX Runtime session, whole graph, {cores} threads, spinning (ONNX Runtime's defaults)", cores, spinning: true));
        }
    }

    /// <summary>The ways raced.</summary>
    public IReadOnlyList<FullModelRunner> Runners => _runners;

    /// <summary>
    /// Times every runner on the same batches of <paramref name="batchSize"/> (calls interleaved, after a warm-up) and
    /// returns the fastest by mean, with a line saying what each took.
    /// </summary>
    public (FullModelRunner Fastest, string Race) Fastest(float[] images, int rows, int size, int batchSize)
    {
        if (_runners.Count == 1) return (_runners[0], $"{_runners[0].Name} (the only full-model runner on this backend)");
        var batches = Math.Max(1, rows / batchSize);
        var take = Math.Min(batchSize, rows);
        float[] Batch(int i) => images.AsSpan((i % batches) * batchSize * size, take * size).ToArray();
        foreach (var runner in _runners)
            for (var i = 0; i < 5; i++) runner.Predict(Batch(i), take);
        var times = _runners.Select(_ => new List<double>()).ToArray();
        for (var turn = 0; turn < RaceCalls / BlockCalls; turn++)
            for (var k = 0; k < _runners.Count; k++)
            {
                var r = (k + turn) % _runners.Count;   // rotate who goes first
                for (var call = turn * BlockCalls; call < (turn + 1) * BlockCalls; call++)
                {
                    var batch = Batch(call);
                    var start = Stopwatch.GetTimestamp();
                    _runners[r].Predict(batch, take);
                    times[r].Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                }
            }
        var means = times.Select(t => t.Average()).ToArray();
        var best = Array.IndexOf(means, means.Min());
        var race = string.Join("; ", _runners.Select((r, i) => string.Create(CultureInfo.InvariantCulture, $"{r.Name}: {means[i]:F3} ms")));
        return (_runners[best], string.Create(CultureInfo.InvariantCulture, $"fastest full model at batch {take} of {_runners.Count} ({RaceCalls} calls each, interleaved in blocks of {BlockCalls}): {race}"));
    }

    private static FullModelRunner Plain(byte[] graph, BaseModel baseModel, string name, int threads, bool spinning)
    {
        var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = threads };
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", spinning ? "1" : "0");
        var session = new InferenceSession(graph, options);
        var shape = baseModel.InputShape;
        var classes = baseModel.ClassCount;
        var run = new RunOptions();
        string[] inputNames = ["Image"];
        string[] outputNames = ["Score"];
        uint[] Predict(float[] images, int count)
        {
            var scores = new float[count * classes];
            using var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, images.AsMemory(0, count * shape.Size), [count, shape.Channels, shape.Height, shape.Width]);
            using var output = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, scores.AsMemory(), [count, classes]);
            session.Run(run, inputNames, [input], outputNames, [output]);
            var labels = new uint[count];
            for (var i = 0; i < count; i++)
            {
                var row = scores.AsSpan(i * classes, classes);
                var best = 0;
                for (var c = 1; c < classes; c++) if (row[c] > row[best]) best = c;
                labels[i] = (uint)best + 1;
            }
            return labels;
        }
        return new FullModelRunner(name, Predict, new Owners(session, options, run));
    }

    public void Dispose()
    {
        foreach (var runner in _runners) runner.Owner.Dispose();
    }

    private sealed class Owners(params IDisposable[] items) : IDisposable
    {
        public void Dispose()
        {
            foreach (var item in items) item.Dispose();
        }
    }
}
