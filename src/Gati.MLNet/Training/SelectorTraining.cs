using System.Globalization;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>Settings of selector training (the reference's recipe: SGD lr 0.05, momentum 0.9, weight decay 5e-4, halved every 5 epochs, batch 128).</summary>
public sealed class SelectorTrainingSettings
{
    /// <summary>The selector network.</summary>
    public SelectorArchitecture Architecture { get; set; } = SelectorArchitecture.Default;

    /// <summary>Required precision of this cache's exits on the calibration rows (a per-exit point estimate, not an overall bound).</summary>
    public double TargetPrecision { get; set; } = 0.995;

    /// <summary>Fewest calibration exits for a threshold to count.</summary>
    public int MinimumHits { get; set; } = 20;

    /// <summary>Epochs (the reference trains up to 50).</summary>
    public int Epochs { get; set; } = 30;

    /// <summary>Rows per SGD step.</summary>
    public int BatchSize { get; set; } = 128;

    /// <summary>Initial learning rate.</summary>
    public double LearningRate { get; set; } = 0.05;

    /// <summary>SGD momentum.</summary>
    public double Momentum { get; set; } = 0.9;

    /// <summary>L2 weight decay.</summary>
    public double WeightDecay { get; set; } = 5e-4;

    /// <summary>
    /// Clip each step's gradient to this norm (null: no clipping). The selector's inputs are log-probabilities
    /// reaching -50 and beyond; unclipped steps at the reference's learning rate often killed every hidden unit.
    /// </summary>
    public double? GradientClipNorm { get; set; } = 1.0;

    /// <summary>Epochs between learning-rate halvings.</summary>
    public int LearningRateHalvingEpochs { get; set; } = 5;

    /// <summary>Weigh hits and misses inversely to their frequency (predictors of late layers are right almost always).</summary>
    public bool BalanceClasses { get; set; } = true;

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(Architecture);
        Architecture.Validate();
        if (TargetPrecision is <= 0 or > 1 || double.IsNaN(TargetPrecision)) throw new ArgumentOutOfRangeException(nameof(TargetPrecision), TargetPrecision, "Must be in (0, 1].");
        if (MinimumHits < 1) throw new ArgumentOutOfRangeException(nameof(MinimumHits), MinimumHits, "Must be positive.");
        if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "At least one epoch.");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "Must be positive.");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Must be positive.");
        if (LearningRateHalvingEpochs < 1) throw new ArgumentOutOfRangeException(nameof(LearningRateHalvingEpochs), LearningRateHalvingEpochs, "Must be positive.");
        if (GradientClipNorm is { } clip && !(clip > 0)) throw new ArgumentOutOfRangeException(nameof(GradientClipNorm), clip, "Must be positive (or null for no clipping).");
    }

    internal string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"{Architecture}, target precision {TargetPrecision}, {Epochs} epochs, lr {LearningRate}");
}

/// <summary>
/// Trains a selector on a predictor's held-out outputs (target: predictor label == base label) and calibrates its
/// exit threshold. Held-out outputs are small (k values per row), so they are held in memory.
/// </summary>
internal static class SelectorTraining
{
    /// <param name="logProbabilities">Predictor outputs, rows x classes, row-major.</param>
    /// <param name="correct">Target per row.</param>
    /// <param name="classes">k.</param>
    /// <param name="settings">Recipe.</param>
    /// <param name="seed">Initialisation and shuffling seed.</param>
    /// <param name="device">Where to train.</param>
    public static SelectorNetwork Train(float[] logProbabilities, bool[] correct, int classes, SelectorTrainingSettings settings, int seed, Device device)
    {
        settings.Validate();
        if (correct.Length == 0) throw new ArgumentException("No rows to train the selector on.");
        if (logProbabilities.Length != correct.Length * classes) throw new ArgumentException("Log-probabilities must be rows x classes.");
        NativeNumerics.EnsureSound(NativeNumerics.ForLinear(settings.BatchSize, [classes], classes), device);
        var network = SeededInit.Create(seed, () => new SelectorNetwork(settings.Architecture, classes));
        try
        {
            network.to(device);
            using (var inputs = tensor(logProbabilities, [correct.Length, classes]).to(device))
                network.StandardizeHiddenLayer(inputs);
            FineTune(network, logProbabilities, correct, classes, settings, seed, device);
            return network;
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Trains <paramref name="network"/> from its current weights with the recipe of <paramref name="settings"/>: the
    /// offline trainer's loop, also used by online updates to fine-tune a serving selector (a warm start). Arguments as
    /// for <see cref="Train"/>; <paramref name="step"/> runs each SGD step (online updates pass their CPU throttle; null
    /// runs it directly) and <paramref name="cancellation"/> is checked before each.
    /// </summary>
    internal static void FineTune(SelectorNetwork network, float[] logProbabilities, bool[] correct, int classes, SelectorTrainingSettings settings, int seed,
        Device device, Action<Action>? step = null, CancellationToken cancellation = default)
    {
        settings.Validate();
        var rows = correct.Length;
        if (rows == 0) throw new ArgumentException("No rows to train the selector on.");
        if (logProbabilities.Length != rows * classes) throw new ArgumentException("Log-probabilities must be rows x classes.");
        var hits = correct.Count(c => c);
        // Weights inverse to frequency; a class that never occurs gets weight 1 (it contributes no loss anyway).
        var weights = settings.BalanceClasses
            ? new float[] { rows - hits == 0 ? 1f : rows / (2f * (rows - hits)), hits == 0 ? 1f : rows / (2f * hits) }
            : [1f, 1f];
        network.train();
        using var optimizer = new SafeSgd(network.parameters(), settings.LearningRate, settings.Momentum, weightDecay: settings.WeightDecay);
        using var weightTensor = tensor(weights).to(device);
        using var allInputs = tensor(logProbabilities, [rows, classes]).to(device);
        using var allTargets = tensor(correct.Select(c => c ? 1L : 0L).ToArray(), [rows]).to(device);
        var random = new Random(seed);
        var order = Enumerable.Range(0, rows).ToArray();
        for (var epoch = 0; epoch < settings.Epochs; epoch++)
        {
            var lr = LearningRates.At(LearningRateSchedule.Step, settings.LearningRate, 0, 1, epoch, settings.LearningRateHalvingEpochs);
            foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
            random.Shuffle(order);
            for (var start = 0; start < rows; start += settings.BatchSize)
            {
                cancellation.ThrowIfCancellationRequested();
                var n = Math.Min(settings.BatchSize, rows - start);
                var batch = order.AsSpan(start, n).ToArray().Select(i => (long)i).ToArray();
                var (e, b) = (epoch + 1, start / settings.BatchSize + 1);
                void Step()
                {
                    using var scope = NewDisposeScope();
                    var index = tensor(batch, [n]).to(device);
                    var loss = nn.functional.cross_entropy(network.forward(allInputs.index_select(0, index)), allTargets.index_select(0, index), weightTensor);
                    optimizer.zero_grad();
                    loss.backward();
                    NonFiniteGuard.Check(loss, network, "selector", e, b, lr);
                    if (settings.GradientClipNorm is { } clip) nn.utils.clip_grad_norm_(network.parameters(), clip);
                    optimizer.step();
                }
                if (step is null) Step();
                else step(Step);
            }
        }
        network.eval();
    }

    /// <summary>P(hit) for every row, in batches.</summary>
    public static float[] HitProbabilities(SelectorNetwork network, float[] logProbabilities, int classes, Device device)
    {
        var rows = logProbabilities.Length / classes;
        var result = new float[rows];
        using var noGrad = no_grad();
        for (var start = 0; start < rows; start += 4096)
        {
            using var scope = NewDisposeScope();
            var n = Math.Min(4096, rows - start);
            var x = tensor(logProbabilities.AsSpan(start * classes, n * classes).ToArray(), [n, classes]).to(device);
            network.HitProbability(x).cpu().data<float>().CopyTo(result.AsSpan(start, n), 0, 0);
        }
        return result;
    }
}
