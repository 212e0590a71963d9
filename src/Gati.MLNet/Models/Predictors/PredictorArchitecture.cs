using System.Globalization;
using Gati.MLNet.Data;

namespace Gati.MLNet.Models.Predictors;

/// <summary>
/// A predictor architecture with its hyperparameters: <c>FC(hidden)</c>, <c>Pool(poolSize, hidden)</c> or
/// <c>Conv(kernel, stride)</c> (shared/notes/reference-algorithm.md), or <c>Grid(grid, hidden)</c> for large feature maps.
/// The seed's table uses FC(1024), Pool(4096, 1024) and Conv(3, 1). All end in log-softmax over the classes.
/// </summary>
public sealed record PredictorArchitecture
{
    private PredictorArchitecture(PredictorKind kind, int hidden, int poolSize, int kernel, int stride)
    {
        Kind = kind;
        Hidden = hidden;
        PoolSize = poolSize;
        Kernel = kernel;
        Stride = stride;
    }

    /// <summary>The family.</summary>
    public PredictorKind Kind { get; }

    /// <summary>Hidden units (FC and Pool).</summary>
    public int Hidden { get; }

    /// <summary>Length after adaptive average pooling (Pool); cells per side of the pooling grid (Grid).</summary>
    public int PoolSize { get; }

    /// <summary>Cells per side of the pooling grid (Grid).</summary>
    public int GridSize => Kind == PredictorKind.Grid ? PoolSize : 0;

    /// <summary>Convolution kernel size (Conv).</summary>
    public int Kernel { get; }

    /// <summary>Convolution stride (Conv).</summary>
    public int Stride { get; }

    /// <summary>FC(hidden): Linear(D, hidden) → ReLU → Linear(hidden, classes).</summary>
    public static PredictorArchitecture FC(int hidden = 1024) =>
        hidden >= 1 ? new(PredictorKind.FC, hidden, 0, 0, 0) : throw new ArgumentOutOfRangeException(nameof(hidden), hidden, "Hidden units must be positive.");

    /// <summary>Pool(poolSize, hidden): AdaptiveAvgPool1d(poolSize) → Linear(poolSize, hidden) → ReLU → Linear(hidden, classes).</summary>
    public static PredictorArchitecture Pool(int poolSize = 4096, int hidden = 1024)
    {
        if (poolSize < 1) throw new ArgumentOutOfRangeException(nameof(poolSize), poolSize, "Pool size must be positive.");
        if (hidden < 1) throw new ArgumentOutOfRangeException(nameof(hidden), hidden, "Hidden units must be positive.");
        return new(PredictorKind.Pool, hidden, poolSize, 0, 0);
    }

    /// <summary>Conv(kernel, stride): Conv1d(1 → 1, kernel, stride) → ReLU → Linear(L, classes).</summary>
    public static PredictorArchitecture Conv(int kernel = 3, int stride = 1)
    {
        if (kernel < 1) throw new ArgumentOutOfRangeException(nameof(kernel), kernel, "Kernel size must be positive.");
        if (stride < 1) throw new ArgumentOutOfRangeException(nameof(stride), stride, "Stride must be positive.");
        return new(PredictorKind.Conv, 0, 0, kernel, stride);
    }

    /// <summary>
    /// Grid(grid, hidden): the feature map [C, H, W] averaged over a grid × grid grid of cells per channel
    /// (AdaptiveAvgPool2d) → Linear(C·grid², hidden) → ReLU → Linear(hidden, classes). Its size depends on the channels,
    /// not on the map's area, so it fits early cut points of large images (ResNet-18 at 224 x 224: 64 x 56 x 56).
    /// </summary>
    public static PredictorArchitecture Grid(int grid = 4, int hidden = 256)
    {
        if (grid < 1) throw new ArgumentOutOfRangeException(nameof(grid), grid, "Grid size must be positive.");
        if (hidden < 1) throw new ArgumentOutOfRangeException(nameof(hidden), hidden, "Hidden units must be positive.");
        return new(PredictorKind.Grid, hidden, grid, 0, 0);
    }

    /// <summary>The default of a family (the seed's settings).</summary>
    public static PredictorArchitecture Default(PredictorKind kind) => kind switch
    {
        PredictorKind.FC => FC(),
        PredictorKind.Pool => Pool(),
        PredictorKind.Conv => Conv(),
        PredictorKind.Grid => Grid(),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>
    /// Parses <c>fc</c>, <c>fc:512</c>, <c>pool</c>, <c>pool:4096:1024</c>, <c>conv</c>, <c>conv:3:1</c>, <c>grid</c>,
    /// <c>grid:4:256</c> (case-insensitive), or the display form <c>FC(1024)</c>, <c>Pool(4096,1024)</c>, <c>Conv(3,1)</c>,
    /// <c>Grid(4,256)</c>.
    /// </summary>
    public static PredictorArchitecture Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        var normalized = text.Trim().Replace('(', ':').Replace(')', ' ').Replace(',', ':').Replace(" ", "", StringComparison.Ordinal);
        var parts = normalized.Split(':', StringSplitOptions.RemoveEmptyEntries);
        int Arg(int index, int fallback)
        {
            if (parts.Length <= index) return fallback;
            return int.TryParse(parts[index], NumberStyles.None, CultureInfo.InvariantCulture, out var value)
                ? value
                : throw new ArgumentException($"Predictor architecture '{text}': '{parts[index]}' is not a positive integer.", nameof(text));
        }
        var result = parts[0].ToLowerInvariant() switch
        {
            "fc" when parts.Length <= 2 => FC(Arg(1, 1024)),
            "pool" when parts.Length <= 3 => Pool(Arg(1, 4096), Arg(2, 1024)),
            "conv" when parts.Length <= 3 => Conv(Arg(1, 3), Arg(2, 1)),
            "grid" when parts.Length <= 3 => Grid(Arg(1, 4), Arg(2, 256)),
            _ => null,
        };
        return result ?? throw new ArgumentException(
            $"Unknown predictor architecture '{text}': expected fc[:hidden], pool[:poolSize[:hidden]], conv[:kernel[:stride]] or grid[:grid[:hidden]].", nameof(text));
    }

    /// <summary>A short identifier for column and file names: fc1024, pool4096x1024, conv3s1.</summary>
    public string Id => Kind switch
    {
        PredictorKind.FC => string.Create(CultureInfo.InvariantCulture, $"fc{Hidden}"),
        PredictorKind.Pool => string.Create(CultureInfo.InvariantCulture, $"pool{PoolSize}x{Hidden}"),
        PredictorKind.Grid => string.Create(CultureInfo.InvariantCulture, $"grid{PoolSize}x{Hidden}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"conv{Kernel}s{Stride}"),
    };

    /// <summary>The seed's notation: FC(1024), Pool(4096, 1024), Conv(3, 1).</summary>
    public override string ToString() => Kind switch
    {
        PredictorKind.FC => string.Create(CultureInfo.InvariantCulture, $"FC({Hidden})"),
        PredictorKind.Pool => string.Create(CultureInfo.InvariantCulture, $"Pool({PoolSize}, {Hidden})"),
        PredictorKind.Grid => string.Create(CultureInfo.InvariantCulture, $"Grid({PoolSize}, {Hidden})"),
        _ => string.Create(CultureInfo.InvariantCulture, $"Conv({Kernel}, {Stride})"),
    };

    /// <summary>
    /// The parameter-free first step of this architecture (Pool's 1-D pooling, Grid's per-channel grid), which feature
    /// extraction can apply before features are stored: a predictor trained on reduced features is the same function of
    /// the same weights on the full ones. <see cref="FeatureReduction.None"/> for FC and Conv.
    /// </summary>
    public FeatureReduction Reduction => Kind switch
    {
        PredictorKind.Pool => FeatureReduction.Flat(PoolSize),
        PredictorKind.Grid => FeatureReduction.Grid(PoolSize),
        _ => FeatureReduction.None,
    };

    /// <summary>Channels of a feature map of <paramref name="inputSize"/> values shaped <paramref name="shape"/> (Grid needs the shape).</summary>
    private int GridChannels(int inputSize, TensorShape? shape)
    {
        if (shape is not { } s) throw new ArgumentException($"{this} needs the feature map's shape [C, H, W], not only its size ({inputSize}).");
        if (s.Size != inputSize) throw new ArgumentException($"Feature shape {s} does not hold {inputSize} values.");
        return s.Channels;
    }

    /// <summary>Output length of the convolution over <paramref name="inputSize"/> values: floor((D - (k - 1) - 1) / s) + 1.</summary>
    public int ConvOutputLength(int inputSize)
    {
        if (Kind != PredictorKind.Conv) throw new InvalidOperationException("Only Conv predictors convolve.");
        if (inputSize < Kernel) throw new ArgumentException($"Conv({Kernel}, {Stride}) needs at least {Kernel} input values, got {inputSize}.");
        return (inputSize - (Kernel - 1) - 1) / Stride + 1;
    }

    /// <summary>Parameter count of this predictor for <paramref name="inputSize"/> features (shaped <paramref name="shape"/>, which Grid needs) and <paramref name="classes"/> classes.</summary>
    public long ParameterCount(int inputSize, int classes, TensorShape? shape = null) => Kind switch
    {
        PredictorKind.FC => (long)inputSize * Hidden + Hidden + (long)Hidden * classes + classes,
        PredictorKind.Pool => (long)PoolSize * Hidden + Hidden + (long)Hidden * classes + classes,
        PredictorKind.Grid => (long)GridChannels(inputSize, shape) * PoolSize * PoolSize * Hidden + Hidden + (long)Hidden * classes + classes,
        _ => Kernel + 1 + (long)ConvOutputLength(inputSize) * classes + classes,
    };

    /// <summary>
    /// Largest live activation footprint, in float32 values, of one forward pass on one row: the most any layer
    /// holds as input and output at once (input D, pooled/convolved/hidden intermediates, classes).
    /// </summary>
    public long PeakActivationValues(int inputSize, int classes, TensorShape? shape = null) => Kind switch
    {
        PredictorKind.FC => Math.Max((long)inputSize + Hidden, (long)Hidden + classes),
        PredictorKind.Pool => Math.Max(Math.Max((long)inputSize + PoolSize, (long)PoolSize + Hidden), (long)Hidden + classes),
        PredictorKind.Grid => Math.Max(Math.Max((long)inputSize + (long)GridChannels(inputSize, shape) * PoolSize * PoolSize,
            (long)GridChannels(inputSize, shape) * PoolSize * PoolSize + Hidden), (long)Hidden + classes),
        _ => Math.Max((long)inputSize + ConvOutputLength(inputSize), (long)ConvOutputLength(inputSize) + classes),
    };
}
