using Gati.MLNet.Models;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// A call on the CUDA execution provider: the activation of each segment stays in GPU memory (bound as an output
/// on the device, then as the next segment's input); probabilities, P(hit) and hit flags are bound to host buffers,
/// so they are the only per-segment copies to the host. Not yet run on a GPU (docs/onnx.md#cuda).
/// </summary>
internal sealed class OnnxCudaSegmentCall(OnnxRuntimeBackend owner) : IPooledOnnxCall
{
    private readonly RunOptions _runOptions = new();
    private readonly float[] _thresholds = new float[owner.Segments.Count];
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
        var size = count * owner.Segments.InputSizes[segment];
        if (_inputs.Length < size) _inputs = GC.AllocateArray<float>(size, pinned: true);
        if (_hits.Length < count)
        {
            _probabilities = GC.AllocateArray<float>(count * owner.Segments.Classes, pinned: true);
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
        var session = owner.Segments.Sessions[segment];
        using var binding = session.CreateIoBinding();
        using var host = segment == _first
            ? OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _inputs.AsMemory(0, _rows * owner.Segments.InputSizes[segment]), [_rows, .. owner.Segments.InputDims[segment]])
            : null;
        binding.BindInput(OnnxSegment.Input, host ?? _activation!);
        using var probabilities = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _probabilities.AsMemory(0, _rows * owner.Segments.Classes), [_rows, owner.Segments.Classes]);
        binding.BindOutput(OnnxSegment.Probabilities, probabilities);
        var cacheSegment = owner.Segments.ActivationDims[segment] is not null;
        using var threshold = cacheSegment ? OrtValue.CreateTensorValueFromMemory(new[] { _thresholds[segment] }, [1]) : null;
        using var hits = cacheSegment ? OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _hits.AsMemory(0, _rows), [_rows]) : null;
        using var hitProbabilities = cacheSegment ? OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _hitProbabilities.AsMemory(0, _rows), [_rows]) : null;
        if (cacheSegment)
        {
            binding.BindInput(OnnxSegment.Threshold, threshold!);
            binding.BindOutputToDevice(OnnxSegment.Activation, owner.Segments.CudaMemory!);
            binding.BindOutput(OnnxSegment.Hit, hits!);
            binding.BindOutput(OnnxSegment.HitProbability, hitProbabilities!);
        }
        session.RunWithBinding(_runOptions, binding);
        binding.SynchronizeBoundOutputs();
        if (!cacheSegment) return new SegmentResult(_probabilities.AsSpan(0, _rows * owner.Segments.Classes), []);
        var outputs = binding.GetOutputValues();
        DropActivation();
        _outputs = outputs;
        _activation = outputs[Array.IndexOf(binding.GetOutputNames(), OnnxSegment.Activation)];
        return new SegmentResult(_probabilities.AsSpan(0, _rows * owner.Segments.Classes), _hits.AsSpan(0, _rows), _hitProbabilities.AsSpan(0, _rows));
    }

    public ReadOnlySpan<float> Activation(int segment) => [];

    public void Keep(ReadOnlySpan<int> rows)
    {
        var gather = owner.Segments.Gathers[_segment]!;
        var indices = new long[rows.Length];
        for (var i = 0; i < rows.Length; i++) indices[i] = rows[i];
        using var indexValue = OrtValue.CreateTensorValueFromMemory(indices, [indices.Length]);
        using var binding = gather.CreateIoBinding();
        binding.BindInput("Data", _activation!);
        binding.BindInput("Indices", indexValue);
        binding.BindOutputToDevice("Output", owner.Segments.CudaMemory!);
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
        owner.Return(this);
    }

    public void Release()
    {
        DropActivation();
        _runOptions.Dispose();
    }
}
