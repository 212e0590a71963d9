using System.Globalization;
using Gati.MLNet.Data;

namespace Gati.MLNet.Models;

/// <summary>A point of the base network where a learned cache can attach: a value every path from the input to the output passes through.</summary>
/// <param name="Number">1-based, in network order (for Gati's ResNets: the residual block whose output it is).</param>
/// <param name="Name">The value's name in the base model's ONNX graph (e.g. <c>layer3</c>, <c>ReLU301_Output_0</c>).</param>
/// <param name="Shape">[C, H, W] of the features there ([D] vectors as D x 1 x 1).</param>
public sealed record CutPoint(int Number, string Name, TensorShape Shape)
{
    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"cut point {Number} ({Name}, {Shape})");
}

/// <summary>
/// The frozen base network that learned caches attach to, whatever it is: a ResNet trained by Gati, or an imported ONNX
/// network (with an ML.NET trainer's linear head folded in). It has an input shape, classes, ordered cut points with
/// their shapes, and one ONNX graph that is its serving form: the early-exit engine cuts its segments out of that
/// graph, so every base model is served the same way (docs/your-own-model.md).
/// </summary>
public abstract class BaseModel
{
    private int _references = 1;

    private protected BaseModel(IReadOnlyList<string> classNames, ChannelNormalization? inputNormalization)
    {
        ArgumentNullException.ThrowIfNull(classNames);
        if (classNames.Count < 2) throw new ArgumentException($"A classifier needs at least 2 classes (got {classNames.Count}).", nameof(classNames));
        ClassNames = classNames.ToArray();
        InputNormalization = inputNormalization;
    }

    /// <summary>What the model is, for reports: "ResNet18 (width 16)", "ResNet18.onnx + LbfgsMaximumEntropy head".</summary>
    public abstract string Description { get; }

    /// <summary>[C, H, W] of the input images, as the model reads them.</summary>
    public abstract TensorShape InputShape { get; }

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>Number of classes.</summary>
    public int ClassCount => ClassNames.Count;

    /// <summary>
    /// How raw pixels scaled to [0, 1] become the model's input, per channel: <c>(pixel − Mean) / Std</c> (a model that
    /// reads 0-255 pixels has mean 0 and std 1/255); null when unknown.
    /// </summary>
    public ChannelNormalization? InputNormalization { get; }

    /// <summary>The cut points, in network order.</summary>
    public abstract IReadOnlyList<CutPoint> CutPoints { get; }

    /// <summary>Floating-point parameters of the network.</summary>
    public abstract long ParameterCount { get; }

    /// <summary>The cut point numbered <paramref name="number"/>; a clear error for one that does not exist.</summary>
    public CutPoint CutPoint(int number)
    {
        var cuts = CutPoints;
        return number >= 1 && number <= cuts.Count
            ? cuts[number - 1]
            : throw new ArgumentOutOfRangeException(nameof(number), number,
                $"{Description} has cut points 1..{cuts.Count}{(this is ResNetBaseModel ? " (the outputs of its residual blocks)" : "")}; {number} does not exist.");
    }

    /// <summary>The model's ONNX graph (its serving form), built on first use where it is not stored.</summary>
    internal abstract BaseGraph Graph { get; }

    /// <summary>The bytes of <see cref="Graph"/> as a zip stores them.</summary>
    internal abstract byte[] GraphBytes { get; }

    /// <summary>Starts computing features at cut points (reduced as asked) and the logits, for training and measurement.</summary>
    /// <param name="requests">The features wanted.</param>
    /// <param name="device">Where to compute them (auto/cpu/cuda; the ONNX base runs on ONNX Runtime's CPU provider).</param>
    internal abstract IFeatureExtraction OpenExtraction(IReadOnlyList<FeatureRequest> requests, string device);

    /// <summary>
    /// The head as a global average over the last cut point's channels and one linear layer (weights [k, C], bias [k]),
    /// when the model ends that way; predictors of the last cut points can start as it.
    /// </summary>
    internal virtual (float[] Weight, float[] Bias)? LinearHead => Graph.LinearHead();

    /// <summary>Another holder (components built on this model share it).</summary>
    internal BaseModel Acquire()
    {
        while (true)
        {
            var current = Volatile.Read(ref _references);
            ObjectDisposedException.ThrowIf(current <= 0, this);
            if (Interlocked.CompareExchange(ref _references, current + 1, current) == current) return this;
        }
    }

    internal bool IsReleased => Volatile.Read(ref _references) <= 0;

    /// <summary>Drops a holder; the last frees the native resources.</summary>
    internal void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0) DisposeCore();
    }

    private protected abstract void DisposeCore();

    /// <inheritdoc/>
    public override string ToString() => $"{Description}: input {InputShape}, {ClassCount} classes, {CutPoints.Count} cut points";
}

/// <summary>Features wanted at one cut point.</summary>
/// <param name="Cut">The cut point's number.</param>
/// <param name="Reduction">Applied before the features leave the extraction.</param>
internal sealed record FeatureRequest(int Cut, FeatureReduction Reduction);

/// <summary>A running feature extraction: the base model on batches of images, returning the requested features and its logits.</summary>
internal interface IFeatureExtraction : IDisposable
{
    /// <summary>Values per row of each request's features.</summary>
    IReadOnlyList<int> Sizes { get; }

    /// <summary>
    /// Runs <paramref name="count"/> images (row-major, the model's input shape) and copies out each request's features
    /// (null entries skipped: the network runs only as deep as the outputs need where it can), the logits and the
    /// predicted keys (1-based).
    /// </summary>
    void Extract(float[] images, int count, float[]?[] features, float[]? logits, uint[]? predicted);
}
