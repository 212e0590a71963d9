using System.Globalization;
using Gati.MLNet.Data;
using Gati.MLNet.Onnx;
using static TorchSharp.torch;

namespace Gati.MLNet.Models;

/// <summary>
/// A parameter-free reduction of a cut point's features, applied where they are extracted so that large feature maps
/// are stored and streamed small: the first step of the Pool predictor (1-D adaptive average pooling of the flattened
/// map) or of the Grid predictor (a per-channel grid of averages). A predictor whose architecture starts with the same
/// reduction computes the same function of the same weights on reduced and on full features (pooling to the size one
/// already has changes nothing), so it trains on the small ones and serves on the full ones.
/// </summary>
public sealed record FeatureReduction
{
    private FeatureReduction(FeatureReductionKind kind, int size)
    {
        Kind = kind;
        Size = size;
    }

    /// <summary>What the reduction does.</summary>
    public FeatureReductionKind Kind { get; }

    /// <summary>Pooled length (Flat) or cells per side (Grid).</summary>
    public int Size { get; }

    /// <summary>The features as they are.</summary>
    public static FeatureReduction None { get; } = new(FeatureReductionKind.None, 0);

    /// <summary>The flattened features averaged into <paramref name="length"/> bins (PyTorch's AdaptiveAvgPool1d).</summary>
    public static FeatureReduction Flat(int length) =>
        length >= 1 ? new(FeatureReductionKind.Flat, length) : throw new ArgumentOutOfRangeException(nameof(length), length, "Must be positive.");

    /// <summary>Each channel of a feature map averaged over <paramref name="cells"/> × <paramref name="cells"/> cells (PyTorch's AdaptiveAvgPool2d).</summary>
    public static FeatureReduction Grid(int cells) =>
        cells >= 1 ? new(FeatureReductionKind.Grid, cells) : throw new ArgumentOutOfRangeException(nameof(cells), cells, "Must be positive.");

    /// <summary>A suffix for column names: "" (none), ".pool4096", ".grid4".</summary>
    public string Suffix => Kind switch
    {
        FeatureReductionKind.Flat => string.Create(CultureInfo.InvariantCulture, $".pool{Size}"),
        FeatureReductionKind.Grid => string.Create(CultureInfo.InvariantCulture, $".grid{Size}"),
        _ => "",
    };

    /// <summary>The shape of reduced features of a cut point shaped <paramref name="shape"/>.</summary>
    public TensorShape Apply(TensorShape shape) => Kind switch
    {
        FeatureReductionKind.Flat => new TensorShape(Size, 1, 1),
        FeatureReductionKind.Grid => new TensorShape(shape.Channels, Size, Size),
        _ => shape,
    };

    /// <summary>Whether reducing changes features of this shape (a reduction to the size they have is the identity).</summary>
    public bool Reduces(TensorShape shape) => Apply(shape) != shape && !(Kind == FeatureReductionKind.Flat && Size == shape.Size);

    /// <summary>Reduces features [N, C·H·W] of a map shaped <paramref name="shape"/> to [N, reduced size] (TorchSharp).</summary>
    internal Tensor Apply(Tensor features, TensorShape shape)
    {
        var rows = features.shape[0];
        return Kind switch
        {
            FeatureReductionKind.Flat => nn.functional.adaptive_avg_pool1d(features.view(rows, 1, shape.Size), Size).view(rows, Size),
            FeatureReductionKind.Grid => nn.functional.adaptive_avg_pool2d(features.view(rows, shape.Channels, shape.Height, shape.Width), [Size, Size])
                .view(rows, (long)shape.Channels * Size * Size),
            _ => features,
        };
    }

    /// <summary>
    /// Reduces one row of features of a map shaped <paramref name="shape"/> into <paramref name="reduced"/>
    /// (<see cref="Apply(TensorShape)"/>'s size) in managed code, with the same windows as <see cref="Apply(Tensor, TensorShape)"/>
    /// (PyTorch's adaptive bins: floor(i·n/p) to ceil((i+1)·n/p)): for one row at a time on a request's or a background
    /// thread, where a TorchSharp call costs more than the sums and brings libtorch's threads along.
    /// </summary>
    internal void Apply(ReadOnlySpan<float> features, TensorShape shape, Span<float> reduced)
    {
        if (features.Length != shape.Size) throw new ArgumentException($"A row of {shape} has {shape.Size} values, not {features.Length}.", nameof(features));
        var size = Apply(shape).Size;
        if (reduced.Length != size) throw new ArgumentException($"{this} of {shape} gives {size} values, not {reduced.Length}.", nameof(reduced));
        switch (Kind)
        {
            case FeatureReductionKind.Flat:
                for (var i = 0; i < Size; i++)
                {
                    var (start, end) = Window(i, features.Length, Size);
                    var sum = 0.0;
                    foreach (var value in features[start..end]) sum += value;
                    reduced[i] = (float)(sum / (end - start));
                }
                break;
            case FeatureReductionKind.Grid:
                var (height, width) = (shape.Height, shape.Width);
                for (var c = 0; c < shape.Channels; c++)
                {
                    var map = features.Slice(c * height * width, height * width);
                    for (var i = 0; i < Size; i++)
                    {
                        var (top, bottom) = Window(i, height, Size);
                        for (var j = 0; j < Size; j++)
                        {
                            var (left, right) = Window(j, width, Size);
                            var sum = 0.0;
                            for (var y = top; y < bottom; y++)
                                foreach (var value in map.Slice(y * width + left, right - left)) sum += value;
                            reduced[(c * Size + i) * Size + j] = (float)(sum / ((bottom - top) * (right - left)));
                        }
                    }
                }
                break;
            default:
                features.CopyTo(reduced);
                break;
        }
    }

    // Adaptive pooling's window i of p over n values: [floor(i·n/p), ceil((i+1)·n/p)).
    private static (int Start, int End) Window(int i, int n, int p) => ((int)((long)i * n / p), (int)(((long)(i + 1) * n + p - 1) / p));

    /// <summary>
    /// Writes the reduction as ONNX nodes on <paramref name="value"/> ([N, ...<paramref name="dims"/>]); returns the
    /// reduced value: [N, C, g, g] for Grid, [N, P] for Flat.
    /// </summary>
    internal string Emit(OnnxGraphBuilder graph, string value, long[] dims, string prefix)
    {
        switch (Kind)
        {
            case FeatureReductionKind.Flat:
            {
                var size = (int)dims.Aggregate(1L, (a, b) => a * b);
                var flat = graph.Node("Reshape", [value, graph.Int64Constant(prefix + ".flat", [0, -1], 2)]);
                return AdaptiveAveragePool1d(graph, flat, size, Size, prefix);
            }
            case FeatureReductionKind.Grid:
            {
                if (dims.Length != 3) throw new ArgumentException($"A grid reduction needs a feature map [C, H, W], got [{string.Join(", ", dims)}].");
                var (channels, height, width) = (dims[0], dims[1], dims[2]);
                if (height % Size == 0 && width % Size == 0)
                {
                    var kernel = new[] { height / Size, width / Size };
                    return graph.Node("AveragePool", [value], ("kernel_shape", kernel), ("strides", kernel));
                }
                // Uneven windows (PyTorch's adaptive bins: floor(i·H/g) to ceil((i+1)·H/g)) as one matrix product.
                var pooling = new float[height * width * Size * Size];
                for (var i = 0; i < Size; i++)
                {
                    var (top, bottom) = (i * height / Size, ((i + 1) * height + Size - 1) / Size);
                    for (var j = 0; j < Size; j++)
                    {
                        var (left, right) = (j * width / Size, ((j + 1) * width + Size - 1) / Size);
                        var weight = 1f / ((bottom - top) * (right - left));
                        for (var y = top; y < bottom; y++)
                            for (var x = left; x < right; x++) pooling[(y * width + x) * Size * Size + i * Size + j] = weight;
                    }
                }
                var rows = graph.Node("Reshape", [value, graph.Int64Constant(prefix + ".cells", [0, channels, height * width], 3)]);
                var pooled = graph.Node("MatMul", [rows, graph.Constant(prefix + ".grid", pooling, height * width, (long)Size * Size)]);
                return graph.Node("Reshape", [pooled, graph.Int64Constant(prefix + ".map", [0, channels, Size, Size], 4)]);
            }
            default:
                return value;
        }
    }

    /// <summary>
    /// PyTorch's AdaptiveAvgPool1d(p) over the D features [N, D]: output i averages [floor(i·D/p), ceil((i+1)·D/p)). When p
    /// divides D that is a reshape and a mean; otherwise the windows differ in length, so each is gathered from the
    /// features padded with one zero (short windows point their spare slots at it) and summed, then scaled.
    /// </summary>
    internal static string AdaptiveAveragePool1d(OnnxGraphBuilder graph, string features, int inputSize, int outputSize, string prefix)
    {
        if (inputSize % outputSize == 0)
        {
            var grouped = graph.Node("Reshape", [features, graph.Int64Constant(prefix + ".pool.shape", [0, outputSize, inputSize / outputSize], 3)]);
            return graph.Node("ReduceMean", [grouped], ("axes", new long[] { 2 }), ("keepdims", 0));
        }
        var starts = new long[outputSize];
        var ends = new long[outputSize];
        for (var i = 0; i < outputSize; i++)
        {
            starts[i] = (long)i * inputSize / outputSize;
            ends[i] = ((long)(i + 1) * inputSize + outputSize - 1) / outputSize;
        }
        var width = (int)Enumerable.Range(0, outputSize).Max(i => ends[i] - starts[i]);
        var indices = new long[outputSize * width];
        var scale = new float[outputSize];
        for (var i = 0; i < outputSize; i++)
        {
            for (var j = 0; j < width; j++) indices[i * width + j] = starts[i] + j < ends[i] ? starts[i] + j : inputSize;
            scale[i] = 1f / (ends[i] - starts[i]);
        }
        var padded = graph.Node("Pad", [features, graph.Int64Constant(prefix + ".pool.pads", [0, 0, 0, 1], 4)]);
        var windows = graph.Node("Gather", [padded, graph.Int64Constant(prefix + ".pool.indices", indices, outputSize, width)], ("axis", 1));
        var sums = graph.Node("ReduceSum", [windows, graph.Int64Constant(prefix + ".pool.axes", [2], 1)], ("keepdims", 0));
        return graph.Node("Mul", [sums, graph.Constant(prefix + ".pool.scale", scale, outputSize)]);
    }

    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        FeatureReductionKind.Flat => string.Create(CultureInfo.InvariantCulture, $"1-D pooling to {Size}"),
        FeatureReductionKind.Grid => string.Create(CultureInfo.InvariantCulture, $"{Size}x{Size} grid per channel"),
        _ => "none",
    };
}

/// <summary>The kinds of <see cref="FeatureReduction"/>.</summary>
public enum FeatureReductionKind
{
    /// <summary>Features as they are.</summary>
    None,

    /// <summary>Flattened features averaged into bins.</summary>
    Flat,

    /// <summary>A grid of averages per channel.</summary>
    Grid,
}
