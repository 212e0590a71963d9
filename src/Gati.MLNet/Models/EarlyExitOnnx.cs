using System.Globalization;
using Gati.MLNet.Onnx;
using Onnx;

namespace Gati.MLNet.Models;

/// <summary>One ONNX graph of an early-exit model: the base model from one cut point to a cache's with that cache's lookup fused in, or the rest of the network with its head.</summary>
/// <param name="FirstLayer">First cut point computed (0 when the segment starts at the input).</param>
/// <param name="LastLayer">Last cut point computed; for a cache segment, the cache's.</param>
/// <param name="IsFinal">True for the segment that ends with the head (no cache).</param>
/// <param name="Model">The .onnx bytes. Inputs: <c>Input</c> (images for the first segment, the previous cut point's value
/// after); a cache segment also <c>Threshold</c> [1], its exit threshold (an input, so that a serving engine can move it
/// without new sessions). Outputs: <c>Probabilities</c> [N, k]; a cache segment also <c>Hit</c> [N] (bool: P(hit) at least
/// the threshold), <c>HitProbability</c> [N] (the selector's P(hit)) and <c>Activation</c> (its cut point's value, the next
/// segment's input).</param>
internal sealed record OnnxSegment(int FirstLayer, int LastLayer, bool IsFinal, byte[] Model)
{
    public const string Input = "Input";
    public const string Threshold = "Threshold";
    public const string Activation = "Activation";
    public const string Probabilities = "Probabilities";
    public const string Hit = "Hit";
    public const string HitProbability = "HitProbability";
}

/// <summary>A cache in its ONNX form, placed at a cut point (<see cref="Inference.LearnedCache.Graph"/>).</summary>
internal sealed class CacheGraph
{
    private CacheGraph(int cut, GraphProto graph)
    {
        Cut = cut;
        Nodes = graph.Node.ToList();
        Initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public int Cut { get; }

    public IReadOnlyList<NodeProto> Nodes { get; }

    public IReadOnlyDictionary<string, TensorProto> Initializers { get; }

    public static CacheGraph Parse(int cut, byte[] bytes)
    {
        var model = OnnxModelFile.Parse(bytes, $"the cache on cut point {cut}", directory: null);
        if (model.Graph.Input.All(i => i.Name != CacheOnnx.FeaturesInput)
            || model.Graph.Output.Select(o => o.Name).Order(StringComparer.Ordinal).SequenceEqual([CacheOnnx.HitProbabilityOutput, CacheOnnx.LogProbabilitiesOutput]) is false)
            throw new InvalidDataException($"The cache on cut point {cut} is not a Gati cache graph (Features -> LogProbabilities, HitProbability).");
        return new CacheGraph(cut, model.Graph);
    }

    /// <summary>Copies the cache into <paramref name="builder"/> reading <paramref name="features"/>; returns its log-probabilities and P(hit).</summary>
    public (string LogProbabilities, string HitProbability) Emit(OnnxGraphBuilder builder, string features, string prefix)
    {
        var names = builder.Append(Nodes, Initializers, new Dictionary<string, string>(StringComparer.Ordinal) { [CacheOnnx.FeaturesInput] = features }, prefix);
        return (names[CacheOnnx.LogProbabilitiesOutput], names[CacheOnnx.HitProbabilityOutput]);
    }
}

/// <summary>
/// The whole early exit as one ONNX graph for one input at a time: each cache's hit flag is the condition of an
/// <c>If</c> node whose then-branch returns the cache's probabilities and whose else-branch holds the rest of the
/// network (the next blocks, the next cache, its <c>If</c>, ...), so blocks after a hit are never run and a request
/// costs one session call however deep it goes. Inputs: <c>Input</c> [1, C, H, W] and one <c>Threshold{i}</c> [1] per
/// cache (in cut-point order). Outputs: <c>Probabilities</c> [1, k] and <c>Exit</c> [1] (int64: the index of the cache that
/// answered, or the number of caches when the base model did). Built from the base graph and the caches' graphs, so no
/// TorchSharp network is needed.
/// </summary>
/// <remarks>
/// The tapped form also outputs, per cache i, what the request passed there: <c>Activation{i}</c> (its cut point's value,
/// [1, C, H, W]), <c>HitProbability{i}</c> [1] and <c>LogProbabilities{i}</c> [1, k]; a cache the request never reached
/// gives empty tensors ([0, C, H, W], [0], [0, k]). Online caches run a request they keep on it: one call, as on the plain
/// graph, where running segment by segment would cost a call per cache.
/// </remarks>
internal static class EarlyExitSingleGraph
{
    public const string Exit = "Exit";

    public static string Threshold(int cache) => Indexed(OnnxSegment.Threshold, cache);

    /// <summary>The tapped graph's output of cache <paramref name="cache"/>'s cut point value.</summary>
    public static string Activation(int cache) => Indexed(OnnxSegment.Activation, cache);

    /// <summary>The tapped graph's output of cache <paramref name="cache"/>'s P(hit).</summary>
    public static string HitProbability(int cache) => Indexed(OnnxSegment.HitProbability, cache);

    /// <summary>The tapped graph's output of cache <paramref name="cache"/>'s log-probabilities.</summary>
    public static string LogProbabilities(int cache) => Indexed(CacheOnnx.LogProbabilitiesOutput, cache);

    private static string Indexed(string name, int cache) => string.Create(CultureInfo.InvariantCulture, $"{name}{cache}");

    public static byte[] Build(BaseGraph baseGraph, IReadOnlyList<CacheGraph> caches, bool tapped = false)
    {
        var ordered = caches.OrderBy(c => c.Cut).ToArray();
        var graph = new OnnxGraphBuilder(tapped ? "gati-early-exit-single-tapped" : "gati-early-exit-single");
        var dims = baseGraph.DimsAt(0);
        var x = graph.Input(OnnxSegment.Input, TensorProto.Types.DataType.Float, [1, .. dims.Select(d => (long?)d)]);
        for (var i = 0; i < ordered.Length; i++) graph.Input(Threshold(i), TensorProto.Types.DataType.Float, 1);
        var (probabilities, exit, taps) = From(graph, baseGraph, ordered, 0, x, tapped);
        graph.Output(graph.Rename(probabilities, OnnxSegment.Probabilities), TensorProto.Types.DataType.Float, 1, baseGraph.ClassCount);
        graph.Output(graph.Rename(exit, Exit), TensorProto.Types.DataType.Int64, 1);
        for (var i = 0; i < taps.Length; i++)
            Declare(graph, new Tap(graph.Rename(taps[i].Activation, Activation(i)), graph.Rename(taps[i].HitProbability, HitProbability(i)),
                graph.Rename(taps[i].LogProbabilities, LogProbabilities(i))));
        return graph.ToBytes();
    }

    /// <summary>
    /// Cache <paramref name="index"/>'s segment from the output of the previous one, and everything after it; when
    /// <paramref name="tapped"/>, also what each cache from <paramref name="index"/> on saw (empty where it was not reached).
    /// </summary>
    private static (string Probabilities, string Exit, Tap[] Taps) From(OnnxGraphBuilder graph, BaseGraph baseGraph, CacheGraph[] caches, int index, string x, bool tapped)
    {
        var first = index == 0 ? 0 : caches[index - 1].Cut;
        var last = index < caches.Length ? caches[index].Cut : baseGraph.Cuts.Count + 1;
        x = baseGraph.Emit(graph, first, last, x, string.Create(CultureInfo.InvariantCulture, $"s{index}/"));
        var k = baseGraph.ClassCount;
        if (index == caches.Length)
        {
            var exitIndex = graph.Int64Constant("exit", [index], 1);
            return (graph.Node("Softmax", [x], ("axis", 1)), graph.Node("Identity", [exitIndex]), []);
        }

        var cache = caches[index];
        var prefix = string.Create(CultureInfo.InvariantCulture, $"cache{last}/");
        var (logProbabilities, hitProbability) = cache.Emit(graph, x, prefix);
        var hit = graph.Node("GreaterOrEqual", [hitProbability, Threshold(index)]);
        // The deeper caches' taps pass through the If: empty on a hit, the rest of the network's on a miss.
        var deeper = tapped ? caches.Length - index - 1 : 0;

        var answer = graph.Branch(prefix + "hit");
        answer.Output(answer.Node("Exp", [logProbabilities]), TensorProto.Types.DataType.Float, 1, k);
        answer.Output(answer.Node("Identity", [answer.Int64Constant(prefix + "exit", [index], 1)]), TensorProto.Types.DataType.Int64, 1);
        for (var j = index + 1; j < index + 1 + deeper; j++)
        {
            var cut = baseGraph.DimsAt(caches[j].Cut);
            Declare(answer, new Tap(answer.Node("Identity", [answer.Constant(prefix + "none", [], [0, .. cut])]),
                answer.Node("Identity", [answer.Constant(prefix + "none", [], 0)]), answer.Node("Identity", [answer.Constant(prefix + "none", [], 0, k)])));
        }
        var rest = graph.Branch(prefix + "miss");
        var (probabilities, exit, restTaps) = From(rest, baseGraph, caches, index + 1, x, tapped);
        rest.Output(probabilities, TensorProto.Types.DataType.Float, 1, k);
        rest.Output(exit, TensorProto.Types.DataType.Int64, 1);
        foreach (var tap in restTaps) Declare(rest, tap);
        var outputs = graph.Node("If", [hit], 2 + 3 * deeper, ("then_branch", answer.Graph), ("else_branch", rest.Graph));
        if (!tapped) return (outputs[0], outputs[1], []);
        Tap[] taps =
        [
            new(x, hitProbability, logProbabilities),
            .. Enumerable.Range(0, deeper).Select(j => new Tap(outputs[2 + 3 * j], outputs[3 + 3 * j], outputs[4 + 3 * j])),
        ];
        return (outputs[0], outputs[1], taps);
    }

    /// <summary>What one cache saw, by value name.</summary>
    private readonly record struct Tap(string Activation, string HitProbability, string LogProbabilities);

    /// <summary>
    /// Declares a tap's three values as outputs of <paramref name="graph"/> (the whole graph, or an If branch), in the order
    /// SingleGraphTaps reads them, shapes left open: a cache not reached gives empty tensors.
    /// </summary>
    private static void Declare(OnnxGraphBuilder graph, Tap tap)
    {
        graph.OutputOfAnyShape(tap.Activation, TensorProto.Types.DataType.Float);
        graph.OutputOfAnyShape(tap.HitProbability, TensorProto.Types.DataType.Float);
        graph.OutputOfAnyShape(tap.LogProbabilities, TensorProto.Types.DataType.Float);
    }
}

/// <summary>Cuts a base graph with its caches into ONNX segments (docs/model-format.md#onnx-segments).</summary>
internal static class EarlyExitOnnx
{
    public static IReadOnlyList<OnnxSegment> Segments(BaseGraph baseGraph, IReadOnlyList<CacheGraph> caches)
    {
        var ordered = caches.OrderBy(c => c.Cut).ToArray();
        if (ordered.Select(c => c.Cut).Distinct().Count() != ordered.Length)
            throw new ArgumentException("Two caches on one cut point: choose one per cut point first (CacheOptimizer / gati optimize).", nameof(caches));
        var segments = new List<OnnxSegment>();
        var from = 0;
        foreach (var cache in ordered)
        {
            segments.Add(Segment(baseGraph, from, cache.Cut, cache));
            from = cache.Cut;
        }
        segments.Add(Segment(baseGraph, from, baseGraph.Cuts.Count + 1, null));
        return segments;
    }

    /// <summary>The segment from cut point <paramref name="from"/> (0: the input) to <paramref name="to"/> (with its cache), or to the scores.</summary>
    private static OnnxSegment Segment(BaseGraph baseGraph, int from, int to, CacheGraph? cache)
    {
        var final = cache is null;
        var name = string.Create(CultureInfo.InvariantCulture, $"gati-segment-{from}-{(final ? "head" : to.ToString(CultureInfo.InvariantCulture))}");
        var graph = new OnnxGraphBuilder(name);
        var inputDims = baseGraph.DimsAt(from);
        var input = graph.Input(OnnxSegment.Input, TensorProto.Types.DataType.Float, [null, .. inputDims.Select(d => (long?)d)]);
        var x = baseGraph.Emit(graph, from, to, input, "base/");
        var k = baseGraph.ClassCount;
        var first = from == 0 ? 0 : from + 1;
        if (final)
        {
            var probabilities = graph.Rename(graph.Node("Softmax", [x], ("axis", 1)), OnnxSegment.Probabilities);
            graph.Output(probabilities, TensorProto.Types.DataType.Float, null, k);
            return new OnnxSegment(first, baseGraph.Cuts.Count, true, graph.ToBytes());
        }

        var dims = baseGraph.DimsAt(to);
        var activation = graph.Rename(x, OnnxSegment.Activation);
        var (logProbabilities, hitProbabilityValue) = cache!.Emit(graph, activation, string.Create(CultureInfo.InvariantCulture, $"cache{to}/"));
        var threshold = graph.Input(OnnxSegment.Threshold, TensorProto.Types.DataType.Float, 1);
        var hitProbability = graph.Rename(hitProbabilityValue, OnnxSegment.HitProbability);
        var hit = graph.Rename(graph.Node("GreaterOrEqual", [hitProbability, threshold]), OnnxSegment.Hit);
        var probabilitiesOut = graph.Rename(graph.Node("Exp", [logProbabilities]), OnnxSegment.Probabilities);
        graph.Output(activation, TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
        graph.Output(probabilitiesOut, TensorProto.Types.DataType.Float, null, k);
        graph.Output(hit, TensorProto.Types.DataType.Bool, (long?)null);
        graph.Output(hitProbability, TensorProto.Types.DataType.Float, (long?)null);
        return new OnnxSegment(first, to, false, graph.ToBytes());
    }
}
