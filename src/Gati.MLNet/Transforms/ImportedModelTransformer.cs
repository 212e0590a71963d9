using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(ImportedModelTransformer), null, typeof(SignatureLoadModel), "Gati Imported Model", ImportedModelTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// An imported network as a Gati base model (<see cref="GatiCatalog.ImportBaseModel"/> or
/// <see cref="GatiCatalog.ImportOnnxModel"/>): reads an image vector column and adds <c>Score</c> (class probabilities,
/// Vector&lt;Single, k&gt; with SlotNames) and <c>PredictedLabel</c> (Key&lt;UInt32, k&gt; with KeyValues), scored by
/// ONNX Runtime in batches. Later stages (<c>LearnedCaches</c>, <c>ExtractFeatures</c>) find it in the pipeline as they
/// find a Gati ResNet.
/// </summary>
/// <remarks>
/// Model format (docs/model-format.md): ML.NET model stream "GATIIMPT" 1.1: the base model block (its normalised ONNX
/// graph stored once per zip under GatiShared/, description, class names, input normalisation), then the image, score
/// and predicted-label columns and the batch size. Loading never touches TorchSharp.
/// </remarks>
public sealed class ImportedModelTransformer : GatiTransformerBase, IBaseModelHolder
{
    internal const string LoaderSignature = "GatiImportedModel";
    private const string RegistrationName = "GatiImportedModel";

    private readonly BaseModel _base;
    private readonly Lazy<IFeatureExtraction> _scorer;

    /// <summary>Takes over the caller's hold on <paramref name="baseModel"/>.</summary>
    internal ImportedModelTransformer(IHostEnvironment environment, BaseModel baseModel, string imageColumnName, string scoreColumnName = DefaultColumnNames.Score,
        string predictedLabelColumnName = DefaultColumnNames.PredictedLabel, int batchSize = 16)
        : base(environment, RegistrationName)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be positive.");
        _base = baseModel;
        ImageColumnName = imageColumnName;
        ScoreColumnName = scoreColumnName;
        PredictedLabelColumnName = predictedLabelColumnName;
        BatchSize = batchSize;
        _scorer = new Lazy<IFeatureExtraction>(() => _base.OpenExtraction([], "cpu"), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>The imported network: input shape, classes, cut points.</summary>
    public BaseModel BaseModel => _base;

    /// <summary>Class names in label order (label key k is ClassNames[k - 1]).</summary>
    public IReadOnlyList<string> ClassNames => _base.ClassNames;

    /// <summary>How raw pixels in [0, 1] become the model's input (for a model reading 0-255 pixels: mean 0, std 1/255).</summary>
    public ChannelNormalization? InputNormalization => _base.InputNormalization;

    /// <summary>The input column (the pixels the network reads).</summary>
    public string ImageColumnName { get; }

    /// <summary>The output column of class probabilities.</summary>
    public string ScoreColumnName { get; }

    /// <summary>The output key column of the most probable class.</summary>
    public string PredictedLabelColumnName { get; }

    /// <summary>Rows scored per ONNX Runtime call.</summary>
    public int BatchSize { get; }

    BaseNetwork IBaseModelHolder.Base => new(_base, ImageColumnName);

    private static VersionInfo GetVersionInfo() => ModelStreamVersion("GATIIMPT", 0x00010001, LoaderSignature);

    /// <summary>Class probabilities and predicted keys for <paramref name="count"/> rows of a batch buffer.</summary>
    internal void Score(float[] images, int count, float[]? probabilities, uint[]? predicted)
    {
        ThrowIfDisposed();
        var k = _base.ClassCount;
        var logits = new float[count * k];
        _scorer.Value.Extract(images, count, [], logits, predicted);
        if (probabilities is null) return;
        for (var r = 0; r < count; r++) Softmax(logits.AsSpan(r * k, k), probabilities.AsSpan(r * k, k));
    }

    internal static void Softmax(ReadOnlySpan<float> logits, Span<float> probabilities)
    {
        var max = float.NegativeInfinity;
        foreach (var z in logits) max = Math.Max(max, z);
        double sum = 0;
        for (var c = 0; c < logits.Length; c++) sum += Math.Exp(logits[c] - max);
        for (var c = 0; c < logits.Length; c++) probabilities[c] = (float)(Math.Exp(logits[c] - max) / sum);
    }

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) =>
        new ClassScoreMapper(inputSchema, ImageColumnName, _base.InputShape.Size,
        $"{_base.Description} ({_base.InputShape} inputs)", BatchSize, ClassNames, ScoreColumnName, PredictedLabelColumnName,
        ((IBaseModelHolder)this).Base, Score);

    private protected override VersionInfo ModelVersion => GetVersionInfo();

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        // *** Binary format (docs/model-format.md) ***
        // base model block (BaseModelFormat); string image column, score column, predicted-label column; int32 batch size
        BaseModelFormat.Write(ctx, _base);
        ctx.Writer.Write(ImageColumnName);
        ctx.Writer.Write(ScoreColumnName);
        ctx.Writer.Write(PredictedLabelColumnName);
        ctx.Writer.Write(BatchSize);
    }

    private static ImportedModelTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ctx.CheckAtModel(GetVersionInfo());
        var model = BaseModelFormat.Read(ctx, env);
        try
        {
            var image = ctx.Reader.ReadString();
            var score = ctx.Reader.ReadString();
            var predicted = ctx.Reader.ReadString();
            var batchSize = ModelText.ReadInt(ctx.Reader, "batch size", 1, 1 << 20);
            return new ImportedModelTransformer(env, model, image, score, predicted, batchSize);
        }
        catch
        {
            model.Release();
            throw;
        }
    }

    private protected override void DisposeCore()
    {
        if (_scorer.IsValueCreated) _scorer.Value.Dispose();
        _base.Release();
    }
}
