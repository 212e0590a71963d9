using System.Collections.Concurrent;
using Gati.MLNet.Models;
using Gati.MLNet.Onnx;
using Gati.MLNet.Torch;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// Runs the segments on ONNX Runtime: one session per segment, each fusing its blocks with its cache's predictor and
/// selector, so one session call gives the activation, the probabilities and the hit flags. Concurrent calls run in
/// parallel (sessions are thread-safe); each call rents a context whose buffers and tensor views are reused, so the
/// hot path allocates nothing but the result. On the CPU, compaction moves the surviving rows within the activation
/// buffer, which is the next segment's input. On CUDA, activations stay on the GPU between segments (IO binding),
/// compaction is a Gather on the GPU, and only the probabilities and hit flags are copied to the host.
/// </summary>
internal sealed class OnnxRuntimeBackend : IEarlyExitBackend
{
    private readonly InferenceSession[] _sessions;
    private readonly long[][] _inputDims;    // per segment, without the batch dimension
    private readonly long[][] _activationDims; // per cache segment (its output activation), without the batch dimension
    private readonly int[] _inputSizes;
    private readonly int _classes;
    private readonly string[][] _outputNames;
    private readonly ConcurrentBag<IPooledCall> _idle = new();
    private readonly InferenceSession?[] _gathers;  // CUDA only: per cache segment, the compaction of its activation
    private readonly InferenceSession? _single;      // CPU only: the whole early exit for one input (EarlyExitSingleGraph)
    private readonly InferenceSession? _singleOne;   // the same on one thread, for calls made while others run (when _single has several)
    private readonly ThreadingChoice _threading;
    private int _singleInFlight;
    private readonly string[] _singleInputNames;
    private readonly OrtMemoryInfo? _cudaMemory;
    private int _disposed;

    private OnnxRuntimeBackend(IReadOnlyList<OnnxSegment> segments, byte[]? single, BaseGraph baseGraph, IReadOnlyList<int> cacheLayers, string device,
        EarlyExitEngineOptions options, ThreadingChoice threading)
    {
        _threading = threading;
        CacheLayers = cacheLayers;
        Device = device;
        _classes = baseGraph.ClassCount;
        _inputDims = new long[segments.Count][];
        _activationDims = new long[segments.Count][];
        _inputSizes = new int[segments.Count];
        _outputNames = new string[segments.Count][];
        _sessions = new InferenceSession[segments.Count];
        _gathers = new InferenceSession?[segments.Count];
        var cuda = device.StartsWith("cuda", StringComparison.Ordinal);
        if (cuda)
            _cudaMemory = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, CudaIndex(device), OrtMemType.Default);
        try
        {
            var from = 0;
            for (var s = 0; s < segments.Count; s++)
            {
                var segment = segments[s];
                _inputDims[s] = baseGraph.DimsAt(from);
                _inputSizes[s] = checked((int)_inputDims[s].Aggregate(1L, (a, b) => a * b));
                if (!segment.IsFinal)
                {
                    _activationDims[s] = baseGraph.DimsAt(segment.LastLayer);
                    _outputNames[s] = [OnnxSegment.Activation, OnnxSegment.Probabilities, OnnxSegment.Hit, OnnxSegment.HitProbability];
                    from = segment.LastLayer;
                }
                else
                {
                    _outputNames[s] = [OnnxSegment.Probabilities];
                }
                using var sessionOptions = SessionOptionsFor(options, device, threading.Threads);
                _sessions[s] = new InferenceSession(segment.Model, sessionOptions);
                if (cuda && !segment.IsFinal)
                {
                    using var gatherOptions = SessionOptionsFor(options, device, threading.Threads);
                    _gathers[s] = new InferenceSession(GatherRows(_activationDims[s]), gatherOptions);
                }
            }
            if (single is not null && !cuda)
            {
                using var singleOptions = SessionOptionsFor(options, device, threading.Threads, singleGraph: true);
                _single = new InferenceSession(single, singleOptions);
                if (threading.Threads > 1 && threading.Measured)
                {
                    using var oneOptions = SessionOptionsFor(options, device, 1, singleGraph: true);
                    _singleOne = new InferenceSession(single, oneOptions);
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        _singleInputNames = [OnnxSegment.Input, .. Enumerable.Range(0, cacheLayers.Count).Select(EarlyExitSingleGraph.Threshold)];
        var segmentThreads = OnnxRuntimeEnvironment.PoolThreads is { } pool && (options.IntraOpThreads is not null || threading.Threads == 1)
            ? $"shared pool of {pool} thread{(pool == 1 ? "" : "s")}{(OnnxRuntimeEnvironment.Spinning ? ", spinning" : "")}"
            : $"{options.IntraOpThreads ?? threading.Threads} thread{((options.IntraOpThreads ?? threading.Threads) == 1 ? "" : "s")} per segment session";
        Description = $"ONNX Runtime {OrtEnv.Instance().GetVersionString()} ({device}, {segmentThreads}" +
            (_single is null ? ")" : $", one graph at batch 1: {threading.Describe()})");
    }

    /// <summary>
    /// Cuts the base model's ONNX graph into one segment per cache (with the cache's graph fused in) and a final one, builds
    /// the single graph for batch 1 on the CPU, and opens a session for each. Nothing here needs TorchSharp: the base
    /// graph and the caches' graphs are what a model zip stores.
    /// </summary>
    public static OnnxRuntimeBackend Create(BaseModel baseModel, IReadOnlyList<LearnedCache> caches, EarlyExitEngineOptions options)
    {
        OnnxRuntimeEnvironment.Initialize(options.OnnxThreading); // before ResolveDevice asks OrtEnv for its providers
        var device = ResolveDevice(options.Device);
        var baseGraph = baseModel.Graph;
        var cacheGraphs = caches.Select(c => CacheGraph.Parse(c.Layer, c.Graph)).ToArray();
        var segments = EarlyExitOnnx.Segments(baseGraph, cacheGraphs);
        var single = options.SingleGraphAtBatchOne && device == "cpu" ? EarlyExitSingleGraph.Build(baseGraph, cacheGraphs) : null;
        var threading = device == "cpu" ? ThreadingChoice.For(baseGraph, options) : ThreadingChoice.Fixed(1);
        return new OnnxRuntimeBackend(segments, single, baseGraph, caches.Select(c => c.Layer).ToArray(), device, options, threading);
    }

    public string Description { get; }

    public string Device { get; }

    /// <summary>The cache layer that ends each segment but the last, ascending (checks the single graph's answers).</summary>
    private IReadOnlyList<int> CacheLayers { get; }

    public IEarlyExitCall Begin(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var call = _idle.TryTake(out var idle) ? idle : _cudaMemory is null ? new Call(this) : new CudaCall(this);
        call.Load(segment, inputs, count, thresholds);
        return call;
    }

    public bool TryRunOne(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit)
    {
        exit = -1;
        if (_single is null) return false;
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var call = (Call)(_idle.TryTake(out var idle) ? idle : new Call(this));
        try
        {
            exit = call.RunOne(image, thresholds, probabilities);
        }
        finally
        {
            call.Dispose();
        }
        if ((uint)exit > (uint)CacheLayers.Count)
            throw new InvalidOperationException($"The single-graph early exit answered from exit {exit}; it has {CacheLayers.Count} caches and the base model's head.");
        return true;
    }

    /// <summary>A graph that keeps the rows named by <c>Indices</c> of <c>Data</c> (the CUDA compaction).</summary>
    private static byte[] GatherRows(long[] dims)
    {
        var graph = new OnnxGraphBuilder("gati-compaction");
        var data = graph.Input("Data", global::Onnx.TensorProto.Types.DataType.Float, [null, .. dims.Select(d => (long?)d)]);
        var indices = graph.Input("Indices", global::Onnx.TensorProto.Types.DataType.Int64, (long?)null);
        graph.Output(graph.Rename(graph.Node("Gather", [data, indices], ("axis", 0)), "Output"), global::Onnx.TensorProto.Types.DataType.Float,
            [null, .. dims.Select(d => (long?)d)]);
        return graph.ToBytes();
    }

    private static int CudaIndex(string device) => int.Parse(device.AsSpan(5), System.Globalization.CultureInfo.InvariantCulture);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        while (_idle.TryTake(out var call)) call.Release();
        foreach (var session in _sessions) session?.Dispose();
        foreach (var session in _gathers) session?.Dispose();
        _single?.Dispose();
        _singleOne?.Dispose();
        _cudaMemory?.Dispose();
    }

    /// <summary>"cpu" or "cuda:N": ONNX Runtime's CUDA provider is used when asked for, or for auto when it is present.</summary>
    private static string ResolveDevice(string device)
    {
        var (kind, index) = DeviceOptions.Parse(device);
        var cudaAvailable = OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider");
        return kind switch
        {
            DeviceOptions.DeviceKind.Cpu => "cpu",
            DeviceOptions.DeviceKind.Auto => cudaAvailable ? "cuda:0" : "cpu",
            _ when cudaAvailable => $"cuda:{index ?? 0}",
            _ => throw new InvalidOperationException(
                $"Device '{device}' asks for CUDA, but this ONNX Runtime has no CUDA execution provider (providers: {string.Join(", ", OrtEnv.Instance().GetAvailableProviders())}). " +
                "Build with -p:OnnxRuntimeBackend=cuda (the Microsoft.ML.OnnxRuntime.Gpu.Linux package) on a machine with CUDA and cuDNN, or use device cpu."),
        };
    }

    private static SessionOptions SessionOptionsFor(EarlyExitEngineOptions options, string device, int threads, bool singleGraph = false)
    {
        var session = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
        };
        try
        {
            if (singleGraph) OnnxRuntimeEnvironment.ConfigureSingleGraph(session, options.OnnxThreading, threads);
            else OnnxRuntimeEnvironment.Configure(session, options.OnnxThreading, threads);
            if (device.StartsWith("cuda", StringComparison.Ordinal))
                session.AppendExecutionProvider_CUDA(CudaIndex(device));
            return session;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>A call context that goes back to the backend's pool when the call ends.</summary>
    private interface IPooledCall : IEarlyExitCall
    {
        void Load(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds);

        void Release();
    }

    /// <summary>One call's buffers and their tensor views: rented per call, returned on Dispose.</summary>
    private sealed class Call(OnnxRuntimeBackend owner) : IPooledCall
    {
        private static readonly string[] InputNames = [OnnxSegment.Input];
        private static readonly string[] CacheInputNames = [OnnxSegment.Input, OnnxSegment.Threshold];
        private static readonly string[] SingleOutputNames = [OnnxSegment.Probabilities, EarlyExitSingleGraph.Exit];
        private readonly RunOptions _runOptions = new();
        private readonly Dictionary<(int Segment, int Rows), (OrtValue[] Inputs, OrtValue[] Outputs)> _views = [];
        private readonly float[][] _thresholds = owner._sessions.Select(_ => GC.AllocateArray<float>(1, pinned: true)).ToArray();
        private OrtValue[] _thresholdValues = [];
        private float[][] _inputs = [];        // per segment: segment 0 the images, segment s > 0 the activation of segment s - 1
        private float[] _probabilities = [];
        private float[] _hitProbabilities = [];
        private bool[] _hits = [];
        private int _capacity;
        private int _rows;
        private int _segment;
        private float[] _oneInput = [];         // the single-graph path: one image, its answer and its exit
        private float[] _oneProbabilities = [];
        private long[] _oneExit = [];
        private OrtValue[] _oneInputs = [];
        private OrtValue[] _oneOutputs = [];

        public void Load(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds)
        {
            if (count > _capacity) Grow(count);
            SetThresholds(thresholds);
            inputs.AsSpan(0, count * owner._inputSizes[segment]).CopyTo(_inputs[segment]);
            _rows = count;
        }

        /// <summary>One image through the single graph; returns the exit index.</summary>
        public int RunOne(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities)
        {
            SetThresholds(thresholds);
            if (_oneInputs.Length == 0)
            {
                _oneInput = GC.AllocateArray<float>(owner._inputSizes[0], pinned: true);
                _oneProbabilities = GC.AllocateArray<float>(owner._classes, pinned: true);
                _oneExit = GC.AllocateArray<long>(1, pinned: true);
                _oneInputs =
                [
                    OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _oneInput.AsMemory(), [1, .. owner._inputDims[0]]),
                    .. _thresholdValues.Take(owner.CacheLayers.Count),
                ];
                _oneOutputs =
                [
                    OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _oneProbabilities.AsMemory(), [1, owner._classes]),
                    OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _oneExit.AsMemory(), [1]),
                ];
            }
            image[..owner._inputSizes[0]].CopyTo(_oneInput);
            // Alone, a call uses the threads the measurement chose; while another call runs, one thread (no oversubscription).
            var concurrent = Interlocked.Increment(ref owner._singleInFlight) > 1;
            try
            {
                var session = concurrent && owner._singleOne is { } one ? one : owner._single!;
                session.Run(_runOptions, owner._singleInputNames, _oneInputs, SingleOutputNames, _oneOutputs);
            }
            finally
            {
                Interlocked.Decrement(ref owner._singleInFlight);
            }
            _oneProbabilities.CopyTo(probabilities);
            return (int)_oneExit[0];
        }

        private void SetThresholds(ReadOnlySpan<float> thresholds)
        {
            if (_thresholdValues.Length == 0)
                _thresholdValues = _thresholds.Select(t => OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, t.AsMemory(), [1])).ToArray();
            for (var s = 0; s < thresholds.Length; s++) _thresholds[s][0] = thresholds[s];
        }

        public SegmentResult Run(int segment)
        {
            _segment = segment;
            var (inputs, outputs) = Views(segment, _rows);
            var cacheSegment = owner._activationDims[segment] is not null;
            owner._sessions[segment].Run(_runOptions, cacheSegment ? CacheInputNames : InputNames, inputs, owner._outputNames[segment], outputs);
            var probabilities = _probabilities.AsSpan(0, _rows * owner._classes);
            return cacheSegment
                ? new SegmentResult(probabilities, _hits.AsSpan(0, _rows), _hitProbabilities.AsSpan(0, _rows))
                : new SegmentResult(probabilities, []);
        }

        public ReadOnlySpan<float> Activation(int segment) => _inputs[segment + 1];

        public void Keep(ReadOnlySpan<int> rows)
        {
            // The activation just computed is the next segment's input: move the kept rows to the front, in order
            // (positions ascend, so no row is overwritten before it is moved).
            var buffer = _inputs[_segment + 1];
            var size = owner._inputSizes[_segment + 1];
            for (var j = 0; j < rows.Length; j++)
                if (rows[j] != j) buffer.AsSpan(rows[j] * size, size).CopyTo(buffer.AsSpan(j * size, size));
            _rows = rows.Length;
        }

        private (OrtValue[] Inputs, OrtValue[] Outputs) Views(int segment, int rows)
        {
            if (_views.TryGetValue((segment, rows), out var views)) return views;
            long[] Shape(long[] dims) => [rows, .. dims];
            var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _inputs[segment].AsMemory(0, rows * owner._inputSizes[segment]), Shape(owner._inputDims[segment]));
            var probabilities = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _probabilities.AsMemory(0, rows * owner._classes), [rows, owner._classes]);
            if (owner._activationDims[segment] is { } activation)
            {
                var next = _inputs[segment + 1].AsMemory(0, rows * owner._inputSizes[segment + 1]);
                views = ([input, _thresholdValues[segment]],
                [
                    OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, next, Shape(activation)),
                    probabilities,
                    OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _hits.AsMemory(0, rows), [rows]),
                    OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _hitProbabilities.AsMemory(0, rows), [rows]),
                ]);
            }
            else
            {
                views = ([input], [probabilities]);
            }
            _views[(segment, rows)] = views;
            return views;
        }

        private void Grow(int rows)
        {
            ReleaseViews();
            _capacity = Math.Max(rows, _capacity * 2);
            // On the pinned heap: the tensor views hold on to these arrays for the life of the call context.
            _inputs = owner._inputSizes.Select(size => GC.AllocateArray<float>(_capacity * size, pinned: true)).ToArray();
            _probabilities = GC.AllocateArray<float>(_capacity * owner._classes, pinned: true);
            _hitProbabilities = GC.AllocateArray<float>(_capacity, pinned: true);
            _hits = GC.AllocateArray<bool>(_capacity, pinned: true);
        }

        private void ReleaseViews()
        {
            // The threshold views are shared by every entry and live as long as the context.
            foreach (var value in _views.Values.SelectMany(v => v.Inputs.Concat(v.Outputs)).Distinct().Except(_thresholdValues)) value.Dispose();
            _views.Clear();
        }

        /// <summary>Back to the pool (the engine's call ended).</summary>
        public void Dispose()
        {
            if (owner._disposed != 0) Release();
            else owner._idle.Add(this);
        }

        public void Release()
        {
            ReleaseViews();
            foreach (var value in _oneInputs.Except(_thresholdValues).Concat(_oneOutputs)) value.Dispose();
            foreach (var value in _thresholdValues) value.Dispose();
            _runOptions.Dispose();
        }
    }

    /// <summary>
    /// A call on the CUDA execution provider: the activation of each segment stays in GPU memory (bound as an output
    /// on the device, then as the next segment's input); probabilities, P(hit) and hit flags are bound to host buffers,
    /// so they are the only per-segment copies to the host. Not yet run on a GPU (docs/onnx.md#cuda).
    /// </summary>
    private sealed class CudaCall(OnnxRuntimeBackend owner) : IPooledCall
    {
        private readonly RunOptions _runOptions = new();
        private readonly float[] _thresholds = new float[owner._sessions.Length];
        private float[] _inputs = [];
        private float[] _probabilities = [];
        private float[] _hitProbabilities = [];
        private bool[] _hits = [];
        private IDisposableReadOnlyCollection<OrtValue>? _outputs;
        private OrtValue? _activation;
        private int _first;
        private int _rows;
        private int _segment;

        public void Load(int segment, float[] inputs, int count, ReadOnlySpan<float> thresholds)
        {
            var size = count * owner._inputSizes[segment];
            if (_inputs.Length < size) _inputs = GC.AllocateArray<float>(size, pinned: true);
            if (_hits.Length < count)
            {
                _probabilities = GC.AllocateArray<float>(count * owner._classes, pinned: true);
                _hitProbabilities = GC.AllocateArray<float>(count, pinned: true);
                _hits = GC.AllocateArray<bool>(count, pinned: true);
            }
            thresholds.CopyTo(_thresholds);
            inputs.AsSpan(0, size).CopyTo(_inputs);
            _first = segment;
            _rows = count;
            DropActivation();
        }

        public SegmentResult Run(int segment)
        {
            _segment = segment;
            var session = owner._sessions[segment];
            using var binding = session.CreateIoBinding();
            using var host = segment == _first
                ? OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _inputs.AsMemory(0, _rows * owner._inputSizes[segment]), [_rows, .. owner._inputDims[segment]])
                : null;
            binding.BindInput(OnnxSegment.Input, host ?? _activation!);
            using var probabilities = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _probabilities.AsMemory(0, _rows * owner._classes), [_rows, owner._classes]);
            binding.BindOutput(OnnxSegment.Probabilities, probabilities);
            var cacheSegment = owner._activationDims[segment] is not null;
            using var threshold = cacheSegment ? OrtValue.CreateTensorValueFromMemory(new[] { _thresholds[segment] }, [1]) : null;
            using var hits = cacheSegment ? OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _hits.AsMemory(0, _rows), [_rows]) : null;
            using var hitProbabilities = cacheSegment ? OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _hitProbabilities.AsMemory(0, _rows), [_rows]) : null;
            if (cacheSegment)
            {
                binding.BindInput(OnnxSegment.Threshold, threshold!);
                binding.BindOutputToDevice(OnnxSegment.Activation, owner._cudaMemory!);
                binding.BindOutput(OnnxSegment.Hit, hits!);
                binding.BindOutput(OnnxSegment.HitProbability, hitProbabilities!);
            }
            session.RunWithBinding(_runOptions, binding);
            binding.SynchronizeBoundOutputs();
            if (!cacheSegment) return new SegmentResult(_probabilities.AsSpan(0, _rows * owner._classes), []);
            var outputs = binding.GetOutputValues();
            DropActivation();
            _outputs = outputs;
            _activation = outputs[Array.IndexOf(binding.GetOutputNames(), OnnxSegment.Activation)];
            return new SegmentResult(_probabilities.AsSpan(0, _rows * owner._classes), _hits.AsSpan(0, _rows), _hitProbabilities.AsSpan(0, _rows));
        }

        public ReadOnlySpan<float> Activation(int segment) => [];

        public void Keep(ReadOnlySpan<int> rows)
        {
            var gather = owner._gathers[_segment]!;
            var indices = new long[rows.Length];
            for (var i = 0; i < rows.Length; i++) indices[i] = rows[i];
            using var indexValue = OrtValue.CreateTensorValueFromMemory(indices, [indices.Length]);
            using var binding = gather.CreateIoBinding();
            binding.BindInput("Data", _activation!);
            binding.BindInput("Indices", indexValue);
            binding.BindOutputToDevice("Output", owner._cudaMemory!);
            gather.RunWithBinding(_runOptions, binding);
            var outputs = binding.GetOutputValues();
            DropActivation();
            _outputs = outputs;
            _activation = outputs[0];
            _rows = rows.Length;
        }

        private void DropActivation()
        {
            _outputs?.Dispose();
            _outputs = null;
            _activation = null;
        }

        public void Dispose()
        {
            DropActivation();
            if (owner._disposed != 0) Release();
            else owner._idle.Add(this);
        }

        public void Release()
        {
            DropActivation();
            _runOptions.Dispose();
        }
    }
}
