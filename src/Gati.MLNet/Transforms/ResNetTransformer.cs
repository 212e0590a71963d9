using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(ResNetTransformer), null, typeof(SignatureLoadModel), "Gati ResNet", ResNetTransformer.LoaderSignature)]

namespace Gati.MLNet.Transforms;

/// <summary>
/// A trained CIFAR-style ResNet as an ML.NET transformer: reads an image vector column and adds
/// <c>Score</c> (class probabilities, Vector&lt;Single, k&gt; with SlotNames) and <c>PredictedLabel</c>
/// (Key&lt;UInt32, k&gt; with KeyValues), scoring rows in batches. Created by
/// <see cref="Training.ResNetTrainer.Fit"/> or loaded with <c>mlContext.Model.Load</c>.
/// </summary>
/// <remarks>
/// Model format (docs/model-format.md): ML.NET model stream "GATIRSNT" version 1.3 with the architecture,
/// input shape, class names and column names, and the keys of the network's weights and ONNX graph, stored once per zip under
/// GatiShared/ (shared with the feature extractor and learned caches of the same chain). A loaded model runs on the GPU named by the loading context's
/// <see cref="MLContext.GpuDeviceId"/>, else on the CPU (ML.NET's rule; see <see cref="DeviceOptions.ConfigureContext"/>).
/// </remarks>
public sealed class ResNetTransformer : GatiTransformerBase, IBaseModelHolder
{
    internal const string LoaderSignature = "GatiResNetTransformer";
    private const string RegistrationName = "GatiResNet";

    private readonly ResNetBaseModel _base;

    internal ResNetTransformer(IHostEnvironment environment, ResNet network, Device device, IReadOnlyList<string> classNames,
        string imageColumnName, string scoreColumnName, string predictedLabelColumnName, int batchSize, ChannelNormalization? inputNormalization,
        IReadOnlyList<EpochSummary>? trainingHistory = null)
        : this(environment, new ResNetBaseModel(network.Config, new SharedModule<ResNet>(network, device), classNames, inputNormalization), imageColumnName,
            scoreColumnName, predictedLabelColumnName, batchSize)
    {
        TrainingHistory = trainingHistory?.ToArray() ?? [];
    }

    /// <summary>Takes over the caller's hold on <paramref name="baseModel"/>.</summary>
    private ResNetTransformer(IHostEnvironment environment, ResNetBaseModel baseModel, string imageColumnName, string scoreColumnName,
        string predictedLabelColumnName, int batchSize)
        : base(environment, RegistrationName)
    {
        _base = baseModel;
        ImageColumnName = imageColumnName;
        ScoreColumnName = scoreColumnName;
        PredictedLabelColumnName = predictedLabelColumnName;
        BatchSize = batchSize;
    }

    /// <summary>
    /// The per-channel normalisation the training images went through (recorded by the dataset loaders), so that
    /// serving code can prepare raw images the same way; null when the training data did not record it.
    /// </summary>
    public ChannelNormalization? InputNormalization => _base.InputNormalization;

    /// <summary>Architecture, input shape, class count and base width.</summary>
    public ResNetConfig Config => _base.Config;

    /// <summary>The base model this transformer runs: its cut points, its ONNX graph.</summary>
    public BaseModel BaseModel => _base;

    /// <summary>
    /// The epochs that trained this model (those restored from a checkpoint by a resumed run included), when it was
    /// trained in this process by <see cref="Training.ResNetTrainer.Fit"/>; empty for a model loaded from a file.
    /// </summary>
    public IReadOnlyList<EpochSummary> TrainingHistory { get; } = [];

    /// <summary>Class names in label order (label key k is ClassNames[k - 1]).</summary>
    public IReadOnlyList<string> ClassNames => _base.ClassNames;

    /// <summary>The input column (normalised image vector).</summary>
    public string ImageColumnName { get; }

    /// <summary>The output column of class probabilities.</summary>
    public string ScoreColumnName { get; }

    /// <summary>The output key column of the most probable class.</summary>
    public string PredictedLabelColumnName { get; }

    /// <summary>Rows scored per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>The device the network runs on (e.g. "cpu", "cuda:0").</summary>
    public string Device => DeviceInfo.ToString();

    internal Device DeviceInfo => _base.Network.Device;

    /// <summary>The network, in eval mode on <see cref="DeviceInfo"/>. Callers serialise through <see cref="Gate"/>.</summary>
    internal ResNet Network => EvalNetwork();

    internal object Gate => _base.Network.Gate;

    BaseNetwork IBaseModelHolder.Base => new(_base, ImageColumnName);

    private ResNet EvalNetwork()
    {
        var network = _base.Network.Module;
        network.eval();
        return network;
    }

    // 1.2: input normalisation; 1.3: the ONNX graph
    private static VersionInfo GetVersionInfo() => ModelStreamVersion("GATIRSNT", 0x00010003, LoaderSignature);

    /// <summary>Class probabilities and predicted keys for <paramref name="count"/> rows of a batch buffer.</summary>
    internal void Score(float[] images, int count, float[]? probabilities, uint[]? predicted)
    {
        ThrowIfDisposed();
        var shape = Config.InputShape;
        _base.Network.Forward(images, count, [shape.Channels, shape.Height, shape.Width], (_, input) =>
        {
            var logits = EvalNetwork().forward(input);
            if (probabilities is not null) TensorOutputs.CopyRows(nn.functional.softmax(logits, 1), probabilities, count, Config.ClassCount);
            if (predicted is not null) TensorOutputs.ArgmaxKeys(logits, predicted, count);
        });
    }

    private protected override BatchMapper MakeMapper(DataViewSchema inputSchema) =>
        new ClassScoreMapper(inputSchema, ImageColumnName, Config.InputShape.Size,
        $"the {Config.Architecture} ({Config.InputShape} images)", BatchSize, ClassNames, ScoreColumnName, PredictedLabelColumnName,
        ((IBaseModelHolder)this).Base, Score);

    private protected override VersionInfo ModelVersion => GetVersionInfo();

    private protected override void SaveModel(ModelSaveContext ctx)
    {
        // *** Binary format (docs/model-format.md) ***
        // byte   architecture (ResNetArchitecture)
        // int32  channels, height, width, class count, base width
        // int32 + strings: class names
        // string image column, score column, predicted-label column
        // int32  batch size
        // string key of the network's weights in GatiShared/ (SharedWeights)
        // (1.2) input normalisation (ModelText.WriteNormalization)
        // (1.3) string key of the network's ONNX graph in GatiShared/ (its serving form)
        var writer = ctx.Writer;
        ResNetConfigFormat.Write(writer, Config);
        ModelText.WriteStrings(writer, ClassNames);
        writer.Write(ImageColumnName);
        writer.Write(ScoreColumnName);
        writer.Write(PredictedLabelColumnName);
        writer.Write(BatchSize);
        writer.Write(SharedWeights.Save(ctx, _base.Network));
        ModelText.WriteNormalization(writer, InputNormalization);
        writer.Write(SharedWeights.SaveBytes(ctx, _base.GraphBytes, "onnx"));
    }

    // Factory for SignatureLoadModel (ML.NET finds it through the LoadableClass attribute above).
    private static ResNetTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ctx.CheckAtModel(GetVersionInfo());
        var (config, classNames) = ResNetConfigFormat.ReadWithClassNames(ctx.Reader);
        var imageColumn = ctx.Reader.ReadString();
        var scoreColumn = ctx.Reader.ReadString();
        var predictedColumn = ctx.Reader.ReadString();
        var batchSize = ModelText.ReadInt(ctx.Reader, "batch size", 1, 1 << 20);
        var weights = ctx.Reader.ReadString();
        var normalization = ctx.Header.ModelVerWritten >= 0x00010002 ? ModelText.ReadNormalization(ctx.Reader) : null;
        var graph = ctx.Header.ModelVerWritten >= 0x00010003 ? ctx.Reader.ReadString() : "";
        var model = BaseModelFormat.ReadResNet(ctx, env, config, weights, graph, classNames, normalization);
        try
        {
            return new ResNetTransformer(env, model, imageColumn, scoreColumn, predictedColumn, batchSize);
        }
        catch
        {
            model.Release();
            throw;
        }
    }

    private protected override void DisposeCore() => _base.Release();
}
