using System.Collections.Concurrent;
using Gati.MLNet.ModelFormat;
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
/// buffer, which is the next segment's input.
/// </summary>
internal sealed class OnnxRuntimeBackend : IEarlyExitBackend
{
    private readonly InferenceSession[] _sessions;
    private readonly long[][] _inputDims;    // per segment, without the batch dimension
    private readonly long[][] _activationDims; // per cache segment (its output activation), without the batch dimension
    private readonly int[] _inputSizes;
    private readonly int _classes;
    private readonly string[][] _outputNames;
    private readonly ConcurrentBag<Call> _idle = new();
    private int _disposed;

    private OnnxRuntimeBackend(IReadOnlyList<OnnxSegment> segments, ResNet network, IReadOnlyList<int> cacheLayers, string device,
        EarlyExitEngineOptions options)
    {
        CacheLayers = cacheLayers;
        Device = device;
        _classes = network.Config.ClassCount;
        _inputDims = new long[segments.Count][];
        _activationDims = new long[segments.Count][];
        _inputSizes = new int[segments.Count];
        _outputNames = new string[segments.Count][];
        _sessions = new InferenceSession[segments.Count];
        try
        {
            for (var s = 0; s < segments.Count; s++)
            {
                var segment = segments[s];
                var input = segment.FirstLayer == 0 ? network.Config.InputShape : network.LayerOutputShape(segment.FirstLayer - 1);
                _inputDims[s] = [input.Channels, input.Height, input.Width];
                _inputSizes[s] = input.Size;
                if (!segment.IsFinal)
                {
                    var output = network.LayerOutputShape(segment.LastLayer);
                    _activationDims[s] = [output.Channels, output.Height, output.Width];
                    _outputNames[s] = [OnnxSegment.Activation, OnnxSegment.Probabilities, OnnxSegment.Hit];
                }
                else
                {
                    _outputNames[s] = [OnnxSegment.Probabilities];
                }
                using var sessionOptions = SessionOptionsFor(options, device);
                _sessions[s] = new InferenceSession(segment.Model, sessionOptions);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        Description = $"ONNX Runtime {OrtEnv.Instance().GetVersionString()} ({device}" +
            (OnnxRuntimeEnvironment.PoolThreads is { } threads ? $", shared pool of {threads} threads{(OnnxRuntimeEnvironment.Spinning ? ", spinning" : "")})" : ", 1 thread per session)");
    }

    /// <summary>Opens a session for each segment graph, exporting them from the networks when none are given.</summary>
    public static OnnxRuntimeBackend Create(SharedModule<ResNet> baseNetwork, IReadOnlyList<LearnedCache> caches, EarlyExitEngineOptions options,
        IReadOnlyList<OnnxSegment>? segments = null)
    {
        if (segments is null)
        {
            lock (baseNetwork.Gate) segments = EarlyExitOnnx.Segments(baseNetwork.Module, caches);
        }
        else if (segments.Count != caches.Count + 1 || segments.Take(caches.Count).Select(s => s.LastLayer).SequenceEqual(caches.Select(c => c.Layer)) is false)
        {
            throw new ArgumentException($"{segments.Count} ONNX segments do not fit caches on layers {string.Join(", ", caches.Select(c => c.Layer))}.", nameof(segments));
        }
        return new OnnxRuntimeBackend(segments, baseNetwork.Module, caches.Select(c => c.Layer).ToArray(), ResolveDevice(options.Device), options);
    }

    public string Description { get; }

    public string Device { get; }

    public IReadOnlyList<int> CacheLayers { get; }

    public IEarlyExitCall Begin(float[] images, int count)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var call = _idle.TryTake(out var idle) ? idle : new Call(this);
        call.Load(images, count);
        return call;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        while (_idle.TryTake(out var call)) call.Release();
        foreach (var session in _sessions) session?.Dispose();
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

    private static SessionOptions SessionOptionsFor(EarlyExitEngineOptions options, string device)
    {
        var session = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
        };
        try
        {
            OnnxRuntimeEnvironment.Configure(session, options);
            if (device.StartsWith("cuda", StringComparison.Ordinal))
                session.AppendExecutionProvider_CUDA(int.Parse(device.AsSpan(5), System.Globalization.CultureInfo.InvariantCulture));
            return session;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>One call's buffers and their tensor views: rented per call, returned on Dispose.</summary>
    private sealed class Call(OnnxRuntimeBackend owner) : IEarlyExitCall
    {
        private readonly RunOptions _runOptions = new();
        private readonly Dictionary<(int Segment, int Rows), (OrtValue[] Inputs, OrtValue[] Outputs)> _views = [];
        private readonly string[] _inputNames = [OnnxSegment.Input];
        private float[][] _inputs = [];        // per segment: segment 0 the images, segment s > 0 the activation of segment s - 1
        private float[] _probabilities = [];
        private bool[] _hits = [];
        private int _capacity;
        private int _rows;

        public void Load(float[] images, int count)
        {
            if (count > _capacity) Grow(count);
            images.AsSpan(0, count * owner._inputSizes[0]).CopyTo(_inputs[0]);
            _rows = count;
        }

        public SegmentResult Run(int segment)
        {
            var (inputs, outputs) = Views(segment, _rows);
            owner._sessions[segment].Run(_runOptions, _inputNames, inputs, owner._outputNames[segment], outputs);
            var probabilities = _probabilities.AsSpan(0, _rows * owner._classes);
            return owner._activationDims[segment] is null
                ? new SegmentResult(probabilities, [])
                : new SegmentResult(probabilities, _hits.AsSpan(0, _rows));
        }

        public void Keep(ReadOnlySpan<int> rows)
        {
            // The activation just computed is the next segment's input: move the kept rows to the front, in order
            // (positions ascend, so no row is overwritten before it is moved).
            var segment = CurrentSegment;
            var buffer = _inputs[segment + 1];
            var size = owner._inputSizes[segment + 1];
            for (var j = 0; j < rows.Length; j++)
                if (rows[j] != j) buffer.AsSpan(rows[j] * size, size).CopyTo(buffer.AsSpan(j * size, size));
            _rows = rows.Length;
        }

        private int CurrentSegment { get; set; }

        private (OrtValue[] Inputs, OrtValue[] Outputs) Views(int segment, int rows)
        {
            CurrentSegment = segment;
            if (_views.TryGetValue((segment, rows), out var views)) return views;
            long[] Shape(long[] dims) => [rows, .. dims];
            var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _inputs[segment].AsMemory(0, rows * owner._inputSizes[segment]), Shape(owner._inputDims[segment]));
            var probabilities = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _probabilities.AsMemory(0, rows * owner._classes), [rows, owner._classes]);
            OrtValue[] outputs;
            if (owner._activationDims[segment] is { } activation)
            {
                var next = _inputs[segment + 1].AsMemory(0, rows * owner._inputSizes[segment + 1]);
                outputs =
                [
                    OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, next, Shape(activation)),
                    probabilities,
                    OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _hits.AsMemory(0, rows), [rows]),
                ];
            }
            else
            {
                outputs = [probabilities];
            }
            views = ([input], outputs);
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
            _hits = GC.AllocateArray<bool>(_capacity, pinned: true);
        }

        private void ReleaseViews()
        {
            foreach (var (inputs, outputs) in _views.Values)
            {
                foreach (var value in inputs.Concat(outputs).Distinct()) value.Dispose();
            }
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
            _runOptions.Dispose();
        }
    }
}
