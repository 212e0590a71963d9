using Gati.MLNet.Data;
using Gati.MLNet.Onnx;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace Gati.MLNet.Models;

/// <summary>
/// An imported ONNX network as a base model (<see cref="GatiCatalog.ImportOnnxModel"/>, <see cref="GatiCatalog.ImportBaseModel"/>):
/// its normalised graph is both what is served and what computes features for training, through ONNX Runtime; no
/// TorchSharp network exists for it.
/// </summary>
internal sealed class OnnxBaseModel : BaseModel
{
    private readonly byte[] _bytes;

    public OnnxBaseModel(BaseGraph graph, byte[] bytes, string description, IReadOnlyList<string> classNames, ChannelNormalization? inputNormalization)
        : base(classNames, inputNormalization)
    {
        if (classNames.Count != graph.ClassCount)
            throw new ArgumentException($"{classNames.Count} class names for a graph with {graph.ClassCount} scores.", nameof(classNames));
        if (inputNormalization is not null) inputNormalization.CheckChannels(graph.InputShape.Channels, "The model's input");
        Graph = graph;
        _bytes = bytes;
        Description = description;
        CutPoints = graph.Cuts.Select(c => new CutPoint(c.Number, c.Name, c.Shape)).ToArray();
        ParameterCount = graph.Graph.Initializers.Values.Where(OnnxTensors.IsFloatingPoint).Sum(t => OnnxTensors.ElementCount(t, description));
    }

    /// <summary>A base model from its stored graph bytes (<see cref="BaseGraph.ToBytes"/>).</summary>
    public static OnnxBaseModel FromBytes(byte[] bytes, string description, IReadOnlyList<string> classNames, ChannelNormalization? inputNormalization) =>
        new(BaseGraph.FromBytes(bytes, description), bytes, description, classNames, inputNormalization);

    public override string Description { get; }

    public override TensorShape InputShape => Graph.InputShape;

    public override IReadOnlyList<CutPoint> CutPoints { get; }

    public override long ParameterCount { get; }

    internal override BaseGraph Graph { get; }

    internal override byte[] GraphBytes => _bytes;

    internal override IFeatureExtraction OpenExtraction(IReadOnlyList<FeatureRequest> requests, string device) => new Extraction(this, requests);

    private protected override void DisposeCore()
    {
    }

    /// <summary>
    /// One ONNX Runtime session over the graph with the requested (reduced) cut points as extra outputs, on all cores
    /// (training-time work, not serving). Without logits, a second graph stops at the deepest cut point asked for.
    /// </summary>
    private sealed class Extraction : IFeatureExtraction
    {
        private readonly OnnxBaseModel _model;
        private readonly FeatureRequest[] _requests;
        private readonly object _gate = new();
        private InferenceSession? _withHead;
        private InferenceSession? _featuresOnly;
        private readonly RunOptions _run = new();

        public Extraction(OnnxBaseModel model, IReadOnlyList<FeatureRequest> requests)
        {
            _model = model;
            _requests = requests.ToArray();
            foreach (var request in _requests) model.CutPoint(request.Cut);
            Sizes = _requests.Select(r => r.Reduction.Apply(model.CutPoint(r.Cut).Shape).Size).ToArray();
        }

        public IReadOnlyList<int> Sizes { get; }

        private InferenceSession Session(bool head)
        {
            lock (_gate)
            {
                ref var session = ref head ? ref _withHead : ref _featuresOnly;
                if (session is not null) return session;
                OnnxRuntimeEnvironment.Initialize(OnnxRuntimeThreading.Default); // Gati's process-wide settings first
                using var options = new SessionOptions
                {
                    GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
                    IntraOpNumThreads = Environment.ProcessorCount,
                };
                session = new InferenceSession(Build(head), options);
                return session;
            }
        }

        private byte[] Build(bool head)
        {
            var graph = _model.Graph;
            var builder = new OnnxGraphBuilder("gati-feature-extraction");
            var input = builder.Input("Input", TensorProto.Types.DataType.Float, [null, .. graph.Graph.InputShape[1..].Select(d => (long?)d)]);
            var deepest = head ? graph.Cuts.Count + 1 : _requests.Select(r => r.Cut).Max();
            // The graph cut by cut, so that each requested value can be tapped where it is computed.
            var x = input;
            var at = new Dictionary<int, string>();
            var stops = _requests.Select(r => r.Cut).Append(deepest).Distinct().Order().ToArray();
            var from = 0;
            foreach (var stop in stops)
            {
                x = graph.Emit(builder, from, stop, x, "base/");
                at[stop] = x;
                from = stop;
            }
            for (var i = 0; i < _requests.Length; i++)
            {
                var request = _requests[i];
                var value = request.Reduction.Emit(builder, at[request.Cut], graph.DimsAt(request.Cut), $"reduce{i}");
                var name = builder.Rename(value, Output(i));
                var cutDims = graph.DimsAt(request.Cut);
                long[] dims = request.Reduction.Kind switch
                {
                    FeatureReductionKind.Flat => [request.Reduction.Size],
                    FeatureReductionKind.Grid => [cutDims[0], request.Reduction.Size, request.Reduction.Size],
                    _ => cutDims,
                };
                builder.Output(name, TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
            }
            if (head) builder.Output(builder.Rename(x, "Logits"), TensorProto.Types.DataType.Float, null, graph.ClassCount);
            return builder.ToBytes();
        }

        private static string Output(int i) => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"Features{i}");

        public void Extract(float[] images, int count, float[]?[] features, float[]? logits, uint[]? predicted)
        {
            var head = logits is not null || predicted is not null;
            var wanted = Enumerable.Range(0, _requests.Length).Where(i => features[i] is not null).ToArray();
            if (!head && wanted.Length == 0) return;
            var session = Session(head);
            var shape = _model.InputShape;
            using var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, images.AsMemory(0, count * shape.Size), [count, shape.Channels, shape.Height, shape.Width]);
            var names = wanted.Select(Output).ToList();
            if (head) names.Add("Logits");
            using var outputs = session.Run(_run, ["Input"], [input], names);
            for (var j = 0; j < wanted.Length; j++)
            {
                var i = wanted[j];
                var values = outputs[j].GetTensorDataAsSpan<float>();
                // Flattened row-major: a reduced map [N, C, g, g] or a vector [N, P] alike.
                values[..(count * Sizes[i])].CopyTo(features[i]);
            }
            if (!head) return;
            var k = _model.ClassCount;
            var scores = outputs[wanted.Length].GetTensorDataAsSpan<float>();
            if (logits is not null) scores[..(count * k)].CopyTo(logits);
            if (predicted is not null)
            {
                for (var r = 0; r < count; r++)
                {
                    var row = scores.Slice(r * k, k);
                    var best = 0;
                    for (var c = 1; c < k; c++) if (row[c] > row[best]) best = c;
                    predicted[r] = (uint)best + 1;
                }
            }
            foreach (var value in scores) if (!float.IsFinite(value)) throw new InvalidDataException($"{_model.Description} computed a non-finite score: check the input images (they must be finite and scaled as the model expects).");
        }

        public void Dispose()
        {
            lock (_gate)
            {
                _withHead?.Dispose();
                _featuresOnly?.Dispose();
                _withHead = _featuresOnly = null;
            }
            _run.Dispose();
        }
    }
}
