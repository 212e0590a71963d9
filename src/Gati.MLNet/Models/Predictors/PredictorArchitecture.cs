using System.Globalization;

namespace Gati.MLNet.Models.Predictors;

/// <summary>
/// A predictor architecture with its hyperparameters: <c>FC(hidden)</c>, <c>Pool(poolSize, hidden)</c> or
/// <c>Conv(kernel, stride)</c> (shared/notes/reference-algorithm.md). The seed's table uses FC(1024),
/// Pool(4096, 1024) and Conv(3, 1). All end in log-softmax over the classes.
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

    /// <summary>Length after adaptive average pooling (Pool).</summary>
    public int PoolSize { get; }

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

    /// <summary>The default of a family (the seed's settings).</summary>
    public static PredictorArchitecture Default(PredictorKind kind) => kind switch
    {
        PredictorKind.FC => FC(),
        PredictorKind.Pool => Pool(),
        PredictorKind.Conv => Conv(),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>
    /// Parses <c>fc</c>, <c>fc:512</c>, <c>pool</c>, <c>pool:4096:1024</c>, <c>conv</c>, <c>conv:3:1</c> (case-insensitive),
    /// or the display form <c>FC(1024)</c>, <c>Pool(4096,1024)</c>, <c>Conv(3,1)</c>.
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
            _ => null,
        };
        return result ?? throw new ArgumentException(
            $"Unknown predictor architecture '{text}': expected fc[:hidden], pool[:poolSize[:hidden]] or conv[:kernel[:stride]].", nameof(text));
    }

    /// <summary>A short identifier for column and file names: fc1024, pool4096x1024, conv3s1.</summary>
    public string Id => Kind switch
    {
        PredictorKind.FC => string.Create(CultureInfo.InvariantCulture, $"fc{Hidden}"),
        PredictorKind.Pool => string.Create(CultureInfo.InvariantCulture, $"pool{PoolSize}x{Hidden}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"conv{Kernel}s{Stride}"),
    };

    /// <summary>The seed's notation: FC(1024), Pool(4096, 1024), Conv(3, 1).</summary>
    public override string ToString() => Kind switch
    {
        PredictorKind.FC => string.Create(CultureInfo.InvariantCulture, $"FC({Hidden})"),
        PredictorKind.Pool => string.Create(CultureInfo.InvariantCulture, $"Pool({PoolSize}, {Hidden})"),
        _ => string.Create(CultureInfo.InvariantCulture, $"Conv({Kernel}, {Stride})"),
    };

    /// <summary>Output length of the convolution over <paramref name="inputSize"/> values: floor((D - (k - 1) - 1) / s) + 1.</summary>
    public int ConvOutputLength(int inputSize)
    {
        if (Kind != PredictorKind.Conv) throw new InvalidOperationException("Only Conv predictors convolve.");
        if (inputSize < Kernel) throw new ArgumentException($"Conv({Kernel}, {Stride}) needs at least {Kernel} input values, got {inputSize}.");
        return (inputSize - (Kernel - 1) - 1) / Stride + 1;
    }

    /// <summary>Parameter count of this predictor for <paramref name="inputSize"/> features and <paramref name="classes"/> classes.</summary>
    public long ParameterCount(int inputSize, int classes) => Kind switch
    {
        PredictorKind.FC => (long)inputSize * Hidden + Hidden + (long)Hidden * classes + classes,
        PredictorKind.Pool => (long)PoolSize * Hidden + Hidden + (long)Hidden * classes + classes,
        _ => Kernel + 1 + (long)ConvOutputLength(inputSize) * classes + classes,
    };

    /// <summary>
    /// Largest live activation footprint, in float32 values, of one forward pass on one row: the most any layer
    /// holds as input and output at once (input D, pooled/convolved/hidden intermediates, classes).
    /// </summary>
    public long PeakActivationValues(int inputSize, int classes) => Kind switch
    {
        PredictorKind.FC => Math.Max((long)inputSize + Hidden, (long)Hidden + classes),
        PredictorKind.Pool => Math.Max(Math.Max((long)inputSize + PoolSize, (long)PoolSize + Hidden), (long)Hidden + classes),
        _ => Math.Max((long)inputSize + ConvOutputLength(inputSize), (long)ConvOutputLength(inputSize) + classes),
    };
}
