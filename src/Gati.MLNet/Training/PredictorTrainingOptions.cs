using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;

namespace Gati.MLNet.Training;

/// <summary>
/// Settings shared by predictor trainers: the reference's distillation recipe (alpha 0.5, T 6; SGD lr 0.05,
/// momentum 0.9, weight decay 5e-4, halved every 5 epochs; batch 64; up to 100 epochs, keeping the epoch with the
/// best held-out agreement) plus early stopping, a bound on the input layer's step (<see cref="InputStepBound"/>),
/// device, progress and checkpoints.
/// </summary>
public abstract class PredictorTrainingOptions
{
    /// <summary>The base model's logits (the teacher).</summary>
    public string TeacherLogitsColumnName { get; set; } = "BaseLogits";

    /// <summary>The base model's predicted label (the hard target), Key&lt;UInt32, k&gt;.</summary>
    public string TeacherLabelColumnName { get; set; } = "BasePredictedLabel";

    /// <summary>Weight of the soft (KL) term of the distillation loss.</summary>
    public double Alpha { get; set; } = 0.5;

    /// <summary>Distillation temperature.</summary>
    public double Temperature { get; set; } = 6;

    /// <summary>Maximum epochs.</summary>
    public int Epochs { get; set; } = 100;

    /// <summary>Stop a predictor after this many epochs without held-out improvement (null: never; needs a ValidationSet).</summary>
    public int? Patience { get; set; } = 10;

    /// <summary>Rows per SGD step.</summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>Initial learning rate.</summary>
    public double LearningRate { get; set; } = 0.05;

    /// <summary>SGD momentum.</summary>
    public double Momentum { get; set; } = 0.9;

    /// <summary>L2 weight decay.</summary>
    public double WeightDecay { get; set; } = 5e-4;

    /// <summary>Default of <see cref="InputStepBound"/>.</summary>
    public const double DefaultInputStepBound = 500;

    /// <summary>
    /// Bounds the step of the linear layer that reads the features (FC predictors): its learning rate is the rate
    /// times min(1, bound / (rate × E‖x‖²)), with E‖x‖² the features' mean squared norm over the first 256 training rows.
    /// Wide early layers of deep networks (E‖x‖² in the tens of thousands) otherwise diverge at the reference's rate;
    /// null turns the bound off (the reference's single rate). Pool and Conv predictors are unaffected.
    /// </summary>
    public double? InputStepBound { get; set; } = DefaultInputStepBound;

    /// <summary>
    /// Train each predictor (except one started as the base model's head) on standardised features, (x - mean) / spread
    /// with one mean and one standard deviation per feature column (over the first 256 training rows), then fold both
    /// into its first linear map, so the saved network reads the features as they are. Post-ReLU features are all
    /// positive with a mean larger than their spread (1.7 ± 1.2 at the second cut point of ML.NET's pretrained ResNet-18,
    /// averaged over a 4 x 4 grid): at the recipe's learning rate that network's Grid predictors on its first two blocks
    /// stayed at a constant answer. False trains on the features as they are (the reference's recipe).
    /// </summary>
    public bool StandardizeInputs { get; set; } = true;

    /// <summary>
    /// Start FC, Pool and Grid predictors on layers shaped like the base model's last layer (the channels its head averages:
    /// the last stage of a ResNet) as the base model's head — channel averages into the head's linear layer — so their
    /// first held-out agreement is the head's own on that layer, and keep that start ("epoch 0") unless an epoch beats
    /// it. On the last layer this is the base model's answer exactly. Needs <see cref="BaseModel"/> or a training view
    /// that comes from the base model; other predictors start from random weights as in the reference.
    /// </summary>
    public bool InitializeFromBaseHead { get; set; } = true;

    /// <summary>
    /// The base model whose head <see cref="InitializeFromBaseHead"/> copies (a <see cref="ResNetTransformer"/> or an
    /// <see cref="ImportedModelTransformer"/>); null: the one the training data comes from (found through
    /// <c>ExtractFeatures</c> in the pipeline; a feature dump does not record it, so pass it with dumps).
    /// </summary>
    public ITransformer? BaseModel { get; set; }

    /// <summary>The base network of a Gati component that trains predictors for a base model it holds; used when <see cref="BaseModel"/> is null, before looking in the pipeline.</summary>
    internal BaseNetwork? KnownBaseNetwork { get; set; }

    /// <summary>The learning rate halves every this many epochs.</summary>
    public int LearningRateHalvingEpochs { get; set; } = 5;

    /// <summary>Random seed (initialisation and shuffling); null uses the MLContext's seed, else 0.</summary>
    public int? Seed { get; set; }

    /// <summary>auto, cpu, cuda or cuda:N.</summary>
    public string Device { get; set; } = DeviceOptions.Auto;

    /// <summary>Held-out data (features and teacher label) for agreement after every epoch; picks the kept epoch and drives early stopping.</summary>
    public IDataView? ValidationSet { get; set; }

    /// <summary>Progress receiver.</summary>
    public IProgress<PredictorTrainingProgress>? Progress { get; set; }

    /// <summary>Batches between batch-level progress reports.</summary>
    public int ProgressInterval { get; set; } = 100;

    /// <summary>Shuffle-pool rows when the data cannot shuffle itself (streamed features).</summary>
    public int ShufflePoolSize { get; set; } = 16384;

    /// <summary>Upper bound of the shuffle pool in bytes (wide early layers hold tens of KB per row).</summary>
    public long ShufflePoolBytes { get; set; } = 512L << 20;

    /// <summary>Rows per forward pass of the fitted transformers.</summary>
    public int InferenceBatchSize { get; set; } = 256;

    /// <summary>Checkpoint written after every epoch; null disables.</summary>
    public string? CheckpointPath { get; set; }

    /// <summary>Continue from <see cref="CheckpointPath"/> when it exists.</summary>
    public bool Resume { get; set; }

    /// <summary>Stops training between batches.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>
    /// Every setting declared here, copied onto <paramref name="target"/> (e.g. a caches estimator's predictor recipe onto
    /// the set trainer's options): an option added to this class reaches every trainer with no other edit.
    /// </summary>
    internal T CopySettingsTo<T>(T target) where T : PredictorTrainingOptions
    {
        ArgumentNullException.ThrowIfNull(target);
        foreach (var property in SharedSettings) property.SetValue(target, property.GetValue(this));
        return target;
    }

    /// <summary>The settable properties declared on this class (public and internal), in declaration order.</summary>
    internal static IReadOnlyList<System.Reflection.PropertyInfo> SharedSettings { get; } = typeof(PredictorTrainingOptions)
        .GetProperties(System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.DeclaredOnly)
        .Where(p => p.CanRead && p.CanWrite).ToArray();

    internal void ValidateCommon()
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(TeacherLogitsColumnName, nameof(TeacherLogitsColumnName));
        ArgumentException.ThrowIfNullOrWhiteSpace(TeacherLabelColumnName, nameof(TeacherLabelColumnName));
        if (Alpha is < 0 or > 1 || double.IsNaN(Alpha)) throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha, "Alpha must be in [0, 1].");
        if (!(Temperature > 0) || !double.IsFinite(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be positive.");
        if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "At least one epoch.");
        if (Patience is < 1) throw new ArgumentOutOfRangeException(nameof(Patience), Patience, "Patience must be positive.");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "Batch size must be positive.");
        if (!(LearningRate > 0) || !double.IsFinite(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Learning rate must be positive.");
        if (Momentum is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Momentum), Momentum, "Momentum must be in [0, 1).");
        if (WeightDecay < 0 || !double.IsFinite(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Weight decay must be non-negative.");
        if (LearningRateHalvingEpochs < 1) throw new ArgumentOutOfRangeException(nameof(LearningRateHalvingEpochs), LearningRateHalvingEpochs, "Must be positive.");
        if (ProgressInterval < 1) throw new ArgumentOutOfRangeException(nameof(ProgressInterval), ProgressInterval, "Must be positive.");
        if (InferenceBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(InferenceBatchSize), InferenceBatchSize, "Must be positive.");
        if (Resume && CheckpointPath is null) throw new ArgumentException("Resume needs a CheckpointPath.", nameof(Resume));
        DeviceOptions.Validate(Device, nameof(Device));
    }
}
