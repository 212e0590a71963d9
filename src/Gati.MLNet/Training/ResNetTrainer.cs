using System.Diagnostics;
using System.Globalization;
using Gati.MLNet.Data;
using Gati.MLNet.Models;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>
/// Trains a CIFAR-style ResNet (the base model of a learned cache) on an image vector column and a key label
/// column, with the reference recipe: SGD with momentum and weight decay, cosine learning-rate annealing, random
/// crop with padding and horizontal flip. Create it with <see cref="GatiCatalog.ResNet(ResNetTrainer.Options)"/>.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>role</description></listheader>
/// <item><term>Image (input)</term><description>Vector&lt;Single&gt; of C*H*W normalised pixels; the shape comes from
/// the vector's dimensions or <see cref="Options.ImageShape"/>.</description></item>
/// <item><term>Label (input)</term><description>Key&lt;UInt32, k&gt;; KeyValues become the class names.</description></item>
/// <item><term>Score (output)</term><description>Vector&lt;Single, k&gt; class probabilities with SlotNames.</description></item>
/// <item><term>PredictedLabel (output)</term><description>Key&lt;UInt32, k&gt; with KeyValues.</description></item>
/// </list>
/// A checkpoint is written after every epoch (atomically) when <see cref="Options.CheckpointPath"/> is set, and
/// <see cref="Options.Resume"/> continues from it after a crash or kill. On the CPU, runs with the same seed,
/// data and thread count give the same weights.
/// </remarks>
public sealed class ResNetTrainer : IEstimator<ResNetTransformer>
{
    private const string CheckpointKind = "resnet";
    private readonly IHost _host;
    private readonly Options _options;

    internal ResNetTrainer(IHostEnvironment environment, Options options)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(options);
        _host = environment.Register(nameof(ResNetTrainer));
        options.Validate();
        _options = options;
    }

    /// <summary>Settings of the trainer. Defaults follow the reference recipe except where noted.</summary>
    public sealed class Options
    {
        /// <summary>Input image column (Vector&lt;Single&gt;).</summary>
        public string ImageColumnName { get; set; } = DefaultColumnNames.Image;

        /// <summary>Input label column (Key&lt;UInt32&gt;).</summary>
        public string LabelColumnName { get; set; } = DefaultColumnNames.Label;

        /// <summary>Output column of class probabilities.</summary>
        public string ScoreColumnName { get; set; } = DefaultColumnNames.Score;

        /// <summary>Output column of the predicted class key.</summary>
        public string PredictedLabelColumnName { get; set; } = DefaultColumnNames.PredictedLabel;

        /// <summary>Network depth.</summary>
        public ResNetArchitecture Architecture { get; set; } = ResNetArchitecture.ResNet18;

        /// <summary>Channels of the first stage: 64 is the paper's; 8-16 make CPU training practical.</summary>
        public int BaseWidth { get; set; } = 64;

        /// <summary>[C, H, W] of the images, when the image column does not carry its dimensions.</summary>
        public TensorShape? ImageShape { get; set; }

        /// <summary>Passes over the training data.</summary>
        public int Epochs { get; set; } = 30;

        /// <summary>Images per SGD step.</summary>
        public int BatchSize { get; set; } = 128;

        /// <summary>Initial learning rate.</summary>
        public double LearningRate { get; set; } = 0.1;

        /// <summary>SGD momentum.</summary>
        public double Momentum { get; set; } = 0.9;

        /// <summary>L2 weight decay.</summary>
        public double WeightDecay { get; set; } = 5e-4;

        /// <summary>Learning-rate schedule.</summary>
        public LearningRateSchedule Schedule { get; set; } = LearningRateSchedule.Cosine;

        /// <summary>Pixels of padding for the random crop (0 disables cropping).</summary>
        public int RandomCropPadding { get; set; } = 4;

        /// <summary>Flip half of the images horizontally (turn off for data where left and right differ, e.g. digits).</summary>
        public bool HorizontalFlip { get; set; } = true;

        /// <summary>Random seed for initialisation, shuffling and augmentation; null uses the MLContext's seed, else 0.</summary>
        public int? Seed { get; set; }

        /// <summary>auto, cpu, cuda or cuda:N (see <see cref="DeviceOptions"/>).</summary>
        public string Device { get; set; } = DeviceOptions.Auto;

        /// <summary>Checkpoint file written after every epoch; null disables checkpoints.</summary>
        public string? CheckpointPath { get; set; }

        /// <summary>Continue from <see cref="CheckpointPath"/> when it exists (its settings must match).</summary>
        public bool Resume { get; set; }

        /// <summary>
        /// Run at most this many epochs in this call, then return the network as it stands; the checkpoint stays resumable
        /// for the rest of the schedule (a time-boxed session on a slow machine). Null runs to <see cref="Epochs"/>. Zero
        /// trains nothing and returns the checkpoint's network, which needs <see cref="Resume"/> and an existing checkpoint.
        /// </summary>
        public int? EpochsThisRun { get; set; }

        /// <summary>Data scored after every epoch for validation accuracy; null skips validation.</summary>
        public IDataView? ValidationSet { get; set; }

        /// <summary>Receives progress every <see cref="ProgressInterval"/> batches and at every epoch's end.</summary>
        public IProgress<ResNetTrainingProgress>? Progress { get; set; }

        /// <summary>Batches between progress reports.</summary>
        public int ProgressInterval { get; set; } = 20;

        /// <summary>Rows in the shuffle pool when the training data cannot shuffle itself (e.g. gzip files).</summary>
        public int ShufflePoolSize { get; set; } = 16384;

        /// <summary>Rows per forward pass when the fitted transformer scores data.</summary>
        public int InferenceBatchSize { get; set; } = 64;

        /// <summary>Stops training between batches; the last checkpoint stays valid for <see cref="Resume"/>.</summary>
        public CancellationToken CancellationToken { get; set; }

        internal void Validate()
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(ImageColumnName, nameof(ImageColumnName));
            ArgumentException.ThrowIfNullOrWhiteSpace(LabelColumnName, nameof(LabelColumnName));
            ArgumentException.ThrowIfNullOrWhiteSpace(ScoreColumnName, nameof(ScoreColumnName));
            ArgumentException.ThrowIfNullOrWhiteSpace(PredictedLabelColumnName, nameof(PredictedLabelColumnName));
            if (!Enum.IsDefined(Architecture)) throw new ArgumentOutOfRangeException(nameof(Architecture), Architecture, "Unknown architecture.");
            if (BaseWidth < 1 || BaseWidth > 1024) throw new ArgumentOutOfRangeException(nameof(BaseWidth), BaseWidth, "Base width must be 1..1024.");
            if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "At least one epoch.");
            if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "Batch size must be positive.");
            if (!(LearningRate > 0) || !double.IsFinite(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Learning rate must be positive.");
            if (Momentum < 0 || Momentum >= 1) throw new ArgumentOutOfRangeException(nameof(Momentum), Momentum, "Momentum must be in [0, 1).");
            if (WeightDecay < 0 || !double.IsFinite(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Weight decay must be non-negative.");
            if (RandomCropPadding < 0) throw new ArgumentOutOfRangeException(nameof(RandomCropPadding), RandomCropPadding, "Padding must be non-negative.");
            if (ProgressInterval < 1) throw new ArgumentOutOfRangeException(nameof(ProgressInterval), ProgressInterval, "Progress interval must be positive.");
            if (InferenceBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(InferenceBatchSize), InferenceBatchSize, "Batch size must be positive.");
            if (Resume && CheckpointPath is null) throw new ArgumentException("Resume needs a CheckpointPath.", nameof(Resume));
            if (EpochsThisRun < 0) throw new ArgumentOutOfRangeException(nameof(EpochsThisRun), EpochsThisRun, "Epochs this run must be zero or more.");
            if (EpochsThisRun == 0 && !Resume)
                throw new ArgumentException("EpochsThisRun = 0 returns the checkpoint's network: it needs Resume and a CheckpointPath.", nameof(EpochsThisRun));
            DeviceOptions.Validate(Device, nameof(Device));
        }
    }

    /// <summary>
    /// Checks the image and label columns and declares the Score and PredictedLabel columns that the fitted transformer
    /// adds (with the annotation by which later Gati stages find this base model).
    /// </summary>
    /// <exception cref="ArgumentException">A column is missing or has the wrong type.</exception>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        SchemaShapes.RequireImage(inputSchema, _options.ImageColumnName, "the ResNet trainer");
        if (!inputSchema.TryFindColumn(_options.LabelColumnName, out var label))
            throw new ArgumentException($"Label column '{_options.LabelColumnName}' not found.", nameof(inputSchema));
        if (!label.IsKey)
            throw new ArgumentException($"Label column '{_options.LabelColumnName}' must be a key; use MapValueToKey first.", nameof(inputSchema));
        var columns = inputSchema.ToDictionary(c => c.Name);
        var baseModel = BaseModelAnnotation.Shape(_options.ImageColumnName);
        columns[_options.ScoreColumnName] = SchemaShapes.ScoreColumn(_options.ScoreColumnName, baseModel);
        columns[_options.PredictedLabelColumnName] = SchemaShapes.KeyColumn(_options.PredictedLabelColumnName, baseModel);
        return new SchemaShape(columns.Values);
    }

    /// <summary>
    /// Trains the network on <paramref name="input"/> and returns the fitted transformer (its
    /// <see cref="ResNetTransformer.TrainingHistory"/> holds the epochs). The trainer itself is left unchanged.
    /// </summary>
    public ResNetTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        GetOutputSchema(SchemaShape.Create(input.Schema));
        TorchRuntime.EnsureInitialized();
        var options = _options;
        var imageColumn = TrainingColumns.RequireImage(input.Schema, options.ImageColumnName);
        var shape = TrainingColumns.ImageShape(imageColumn, options.ImageShape);
        var labelColumn = TrainingColumns.RequireKeyLabel(input.Schema, options.LabelColumnName, out var classCount);
        var classNames = Annotations.TryGetKeyNames(labelColumn) ?? Enumerable.Range(0, classCount).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray();
        var config = new ResNetConfig(options.Architecture, shape, classCount, options.BaseWidth);
        config.Validate();
        var seed = options.Seed ?? (_host as IHostEnvironmentInternal)?.Seed ?? 0;
        var device = DeviceOptions.Resolve(options.Device, _host);
        var batches = new VectorBatchReader(input, [options.ImageColumnName], options.LabelColumnName, options.ShufflePoolSize);
        var rows = input.GetRowCount();
        int? batchesPerEpoch = rows is { } n ? (int)((n + options.BatchSize - 1) / options.BatchSize) : null;

        NativeNumerics.EnsureSoundForTraining(_host, NativeNumerics.ForResNet(config, options.BatchSize), device);
        var network = SeededInit.Create(seed, () => new ResNet(config));
        try
        {
            network.to(device);
            using var optimizer = new SafeSgd(network.parameters(), options.LearningRate, options.Momentum, weightDecay: options.WeightDecay);
            var settings = Settings(options, config, seed, rows);
            var history = new List<EpochSummary>();
            var startEpoch = 0;
            if (options.Resume && options.CheckpointPath is { } resumePath && File.Exists(resumePath))
            {
                var header = TrainingCheckpoint.ReadHeader(resumePath);
                TrainingCheckpoint.CheckCompatible(header, CheckpointKind, settings, resumePath);
                var sections = TrainingCheckpoint.ReadSections(resumePath);
                network.to(torch.CPU);
                TrainingCheckpoint.LoadModule(TrainingCheckpoint.Section(sections, "model", resumePath), network, $"{config.Architecture} in checkpoint {resumePath}");
                network.to(device);
                TrainingCheckpoint.LoadOptimizer(TrainingCheckpoint.Section(sections, "optimizer", resumePath), optimizer);
                history.AddRange(header.History);
                startEpoch = header.EpochsCompleted;
                foreach (var done in header.History)
                    options.Progress?.Report(EpochReport(done, options.Epochs, batchesPerEpoch, restored: true));
            }

            var augmentation = new ImageAugmentation(shape.Channels, shape.Height, shape.Width, options.RandomCropPadding, options.HorizontalFlip);
            var buffers = batches.AllocateBuffers(options.BatchSize);
            var images = buffers[0];
            var augmented = new float[images.Length];
            var labels = new long[options.BatchSize];
            var totalSteps = (long)(batchesPerEpoch ?? 1) * options.Epochs;
            var step = (long)startEpoch * (batchesPerEpoch ?? 0);

            if (options.EpochsThisRun == 0 && startEpoch == 0)
                throw new InvalidOperationException(
                    $"EpochsThisRun = 0 returns a checkpoint's network, but there is no checkpoint at {options.CheckpointPath} to resume.");
            var endEpoch = options.EpochsThisRun is { } budget ? Math.Min(options.Epochs, startEpoch + budget) : options.Epochs;
            for (var epoch = startEpoch; epoch < endEpoch; epoch++)
            {
                network.train();
                var random = new Random(Seeds.Derive(seed, epoch, 0x5eed));
                var clock = Stopwatch.StartNew();
                using var lossSum = torch.zeros(1, dtype: ScalarType.Float64, device: device);
                using var correctSum = torch.zeros(1, dtype: ScalarType.Int64, device: device);
                long seen = 0;
                var batchIndex = 0;
                double lr = options.LearningRate;
                foreach (var count in batches.Read(options.BatchSize, buffers, labels, random))
                {
                    options.CancellationToken.ThrowIfCancellationRequested();
                    lr = LearningRates.At(options.Schedule, options.LearningRate, step, totalSteps, epoch);
                    foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
                    var source = images;
                    if (!augmentation.IsIdentity)
                    {
                        augmentation.Apply(images, augmented, count, random);
                        source = augmented;
                    }
                    using (var scope = NewDisposeScope())
                    {
                        var x = tensor(source, shape.WithBatch(options.BatchSize)).narrow(0, 0, count).to(device);
                        var y = tensor(labels, [options.BatchSize]).narrow(0, 0, count).to(device);
                        var logits = network.forward(x);
                        var loss = nn.functional.cross_entropy(logits, y);
                        optimizer.zero_grad();
                        loss.backward();
                        NonFiniteGuard.Check(loss, network, $"{config.Architecture} base model", epoch + 1, batchIndex + 1, lr);
                        optimizer.step();
                        using var noGrad = no_grad();
                        lossSum.PlusScaledInPlace(loss.detach().to(ScalarType.Float64), count);
                        correctSum.PlusInPlace(logits.argmax(1).eq(y).sum());
                    }
                    seen += count;
                    step++;
                    batchIndex++;
                    if (options.Progress is not null && batchIndex % options.ProgressInterval == 0)
                    {
                        options.Progress.Report(new ResNetTrainingProgress
                        {
                            Epoch = epoch + 1, TotalEpochs = options.Epochs, Batch = batchIndex, BatchesPerEpoch = batchesPerEpoch,
                            Images = seen, Loss = lossSum.item<double>() / seen, Accuracy = (double)correctSum.item<long>() / seen,
                            ImagesPerSecond = seen / clock.Elapsed.TotalSeconds, LearningRate = lr, Elapsed = clock.Elapsed,
                        });
                    }
                }
                if (seen == 0) throw new ArgumentException("The training data has no rows.", nameof(input));
                var trainSeconds = clock.Elapsed.TotalSeconds;
                double? validation = null;
                if (options.ValidationSet is not null)
                {
                    network.eval();
                    validation = Accuracy(network, device, options.ValidationSet, options.ImageColumnName, options.LabelColumnName, shape, classCount, options.InferenceBatchSize);
                }
                var summary = new EpochSummary(epoch + 1, lossSum.item<double>() / seen, (double)correctSum.item<long>() / seen,
                    validation, seen / trainSeconds, clock.Elapsed.TotalSeconds);
                history.Add(summary);
                if (options.CheckpointPath is { } checkpointPath)
                {
                    TrainingCheckpoint.Write(checkpointPath, new TrainingCheckpoint.Header
                    {
                        Kind = CheckpointKind, Settings = settings.ToDictionary(), EpochsCompleted = epoch + 1, History = history.ToList(),
                        ClassNames = classNames,
                    }, [("model", TrainingCheckpoint.ModuleBytes(network)), ("optimizer", TrainingCheckpoint.OptimizerBytes(optimizer))]);
                }
                options.Progress?.Report(EpochReport(summary, options.Epochs, batchesPerEpoch, restored: false) with { LearningRate = lr });
            }

            network.eval();
            return new ResNetTransformer(_host, network, device, classNames, options.ImageColumnName, options.ScoreColumnName,
                options.PredictedLabelColumnName, options.InferenceBatchSize, Annotations.TryGetNormalization(imageColumn), history);
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    private static ResNetTrainingProgress EpochReport(EpochSummary summary, int totalEpochs, int? batchesPerEpoch, bool restored) => new()
    {
        Epoch = summary.Epoch, TotalEpochs = totalEpochs, Batch = batchesPerEpoch ?? 0, BatchesPerEpoch = batchesPerEpoch,
        Images = (long)(summary.ImagesPerSecond * summary.Seconds), Loss = summary.Loss, Accuracy = summary.Accuracy,
        ImagesPerSecond = summary.ImagesPerSecond, LearningRate = double.NaN, Elapsed = TimeSpan.FromSeconds(summary.Seconds),
        EpochCompleted = true, ValidationAccuracy = summary.ValidationAccuracy, Restored = restored,
    };

    /// <summary>The settings a checkpoint must share with the current run to be resumed.</summary>
    private static Dictionary<string, string> Settings(Options options, ResNetConfig config, int seed, long? rows) => new()
    {
        ["architecture"] = config.Architecture.ToString(),
        ["baseWidth"] = config.BaseWidth.ToString(CultureInfo.InvariantCulture),
        ["inputShape"] = config.InputShape.ToString(),
        ["classes"] = config.ClassCount.ToString(CultureInfo.InvariantCulture),
        ["epochs"] = options.Epochs.ToString(CultureInfo.InvariantCulture),
        ["batchSize"] = options.BatchSize.ToString(CultureInfo.InvariantCulture),
        ["learningRate"] = options.LearningRate.ToString("R", CultureInfo.InvariantCulture),
        ["momentum"] = options.Momentum.ToString("R", CultureInfo.InvariantCulture),
        ["weightDecay"] = options.WeightDecay.ToString("R", CultureInfo.InvariantCulture),
        ["schedule"] = options.Schedule.ToString(),
        ["cropPadding"] = options.RandomCropPadding.ToString(CultureInfo.InvariantCulture),
        ["flip"] = options.HorizontalFlip.ToString(),
        ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
        ["trainingRows"] = rows?.ToString(CultureInfo.InvariantCulture) ?? "unknown",
    };

    /// <summary>Top-1 accuracy of <paramref name="network"/> (in eval mode) on labelled data.</summary>
    internal static double Accuracy(ResNet network, Device device, IDataView data, string imageColumn, string labelColumn, TensorShape shape, int classCount, int batchSize)
    {
        TrainingColumns.RequireImage(data.Schema, imageColumn, shape.Size);
        TrainingColumns.RequireKeyLabel(data.Schema, labelColumn, out var labelCount);
        if (labelCount != classCount)
            throw new ArgumentException($"Validation label column '{labelColumn}' has {labelCount} classes but the model has {classCount}.");
        var batches = new VectorBatchReader(data, [imageColumn], labelColumn, poolRows: 1);
        var buffers = batches.AllocateBuffers(batchSize);
        var images = buffers[0];
        var labels = new long[batchSize];
        long correct = 0, total = 0;
        using var noGrad = no_grad();
        foreach (var count in batches.Read(batchSize, buffers, labels, shuffle: null))
        {
            using var scope = NewDisposeScope();
            var x = tensor(images, shape.WithBatch(batchSize)).narrow(0, 0, count).to(device);
            var y = tensor(labels, [batchSize]).narrow(0, 0, count).to(device);
            correct += network.forward(x).argmax(1).eq(y).sum().item<long>();
            total += count;
        }
        if (total == 0) throw new ArgumentException("The validation data has no rows: there is nothing to measure accuracy on.", nameof(data));
        return (double)correct / total;
    }
}
