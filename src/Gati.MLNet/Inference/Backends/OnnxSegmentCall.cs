using Gati.MLNet.Models;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>One call's buffers and their tensor views: rented per call, returned on Dispose.</summary>
internal sealed class OnnxSegmentCall(OnnxRuntimeBackend owner) : IPooledOnnxCall
{
    private static readonly string[] InputNames = [OnnxSegment.Input];
    private static readonly string[] CacheInputNames = [OnnxSegment.Input, OnnxSegment.Threshold];
    private readonly RunOptions _runOptions = new();
    private readonly Dictionary<(int Segment, int Rows), (OrtValue[] Inputs, OrtValue[] Outputs)> _views = [];
    private readonly float[][] _thresholds = owner.Segments.Sessions.Select(_ => GC.AllocateArray<float>(1, pinned: true)).ToArray();
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
        inputs.AsSpan(0, count * owner.Segments.InputSizes[segment]).CopyTo(_inputs[segment]);
        _rows = count;
    }

    /// <summary>One image through the single graph; returns the exit index.</summary>
    public int RunOne(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities)
    {
        BindOne(image, thresholds);
        owner.SingleGraph!.Run(_runOptions, _oneInputs, _oneOutputs);
        _oneProbabilities.CopyTo(probabilities);
        return CheckedExit(_oneExit[0], "single-graph early exit");
    }

    /// <summary>As <see cref="RunOne"/>, on the tapped single graph: also hands out what each cache saw.</summary>
    public SingleGraphTaps RunOneTapped(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds, Span<float> probabilities, out int exit)
    {
        BindOne(image, thresholds);
        var taps = owner.SingleGraph!.RunTapped(_runOptions, _oneInputs);
        try
        {
            taps.Answer(probabilities, out var answered);
            exit = CheckedExit(answered, "tapped single graph");
            return taps;
        }
        catch
        {
            taps.Dispose();
            throw;
        }
    }

    /// <summary>A single graph's exit output: a cache's index, or the number of caches for the base model's head.</summary>
    private int CheckedExit(long exit, string graph) =>
        (ulong)exit <= (ulong)owner.CacheLayers.Count
            ? (int)exit
            : throw new InvalidOperationException($"The {graph} answered from exit {exit}; it has {owner.CacheLayers.Count} caches and the base model's head.");

    private void BindOne(ReadOnlySpan<float> image, ReadOnlySpan<float> thresholds)
    {
        SetThresholds(thresholds);
        if (_oneInputs.Length == 0)
        {
            _oneInput = GC.AllocateArray<float>(owner.Segments.InputSizes[0], pinned: true);
            _oneProbabilities = GC.AllocateArray<float>(owner.Segments.Classes, pinned: true);
            _oneExit = GC.AllocateArray<long>(1, pinned: true);
            _oneInputs =
            [
                OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _oneInput.AsMemory(), [1, .. owner.Segments.InputDims[0]]),
                .. _thresholdValues.Take(owner.CacheLayers.Count),
            ];
            _oneOutputs =
            [
                OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _oneProbabilities.AsMemory(), [1, owner.Segments.Classes]),
                OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _oneExit.AsMemory(), [1]),
            ];
        }
        image[..owner.Segments.InputSizes[0]].CopyTo(_oneInput);
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
        var cacheSegment = owner.Segments.ActivationDims[segment] is not null;
        owner.Segments.Sessions[segment].Run(_runOptions, cacheSegment ? CacheInputNames : InputNames, inputs, owner.Segments.OutputNames[segment], outputs);
        var probabilities = _probabilities.AsSpan(0, _rows * owner.Segments.Classes);
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
        var size = owner.Segments.InputSizes[_segment + 1];
        for (var j = 0; j < rows.Length; j++)
            if (rows[j] != j) buffer.AsSpan(rows[j] * size, size).CopyTo(buffer.AsSpan(j * size, size));
        _rows = rows.Length;
    }

    private (OrtValue[] Inputs, OrtValue[] Outputs) Views(int segment, int rows)
    {
        if (_views.TryGetValue((segment, rows), out var views)) return views;
        long[] Shape(long[] dims) => [rows, .. dims];
        var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _inputs[segment].AsMemory(0, rows * owner.Segments.InputSizes[segment]), Shape(owner.Segments.InputDims[segment]));
        var probabilities = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _probabilities.AsMemory(0, rows * owner.Segments.Classes), [rows, owner.Segments.Classes]);
        if (owner.Segments.ActivationDims[segment] is { } activation)
        {
            var next = _inputs[segment + 1].AsMemory(0, rows * owner.Segments.InputSizes[segment + 1]);
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
        _inputs = owner.Segments.InputSizes.Select(size => GC.AllocateArray<float>(_capacity * size, pinned: true)).ToArray();
        _probabilities = GC.AllocateArray<float>(_capacity * owner.Segments.Classes, pinned: true);
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
    public void Dispose() => owner.Return(this);

    public void Release()
    {
        ReleaseViews();
        foreach (var value in _oneInputs.Except(_thresholdValues).Concat(_oneOutputs)) value.Dispose();
        foreach (var value in _thresholdValues) value.Dispose();
        _runOptions.Dispose();
    }
}
