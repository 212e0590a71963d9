using Gati.MLNet.Models.Predictors;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>
/// Continues training an existing predictor (a warm start) on rows held in memory, with the offline recipe of
/// <see cref="PredictorTrainingOptions"/>: the same distillation step (<see cref="PredictorTraining.Step"/>), batch size,
/// momentum, weight decay, input step bound and learning-rate schedule. What the offline run adds around it is left
/// out on purpose: held-out selection and checkpoints (the caller validates the result), input standardisation (a
/// serving network already reads its features as they are) and a fresh initialisation. Online updates use it.
/// </summary>
internal static class PredictorFineTuning
{
    /// <summary>Writes row <c>row</c>'s features, the teacher's logits (or log-probabilities) and returns its hard label.</summary>
    public delegate long RowReader(int row, Span<float> features, Span<float> teacherLogits);

    /// <param name="predictor">The network, trained in place (on the CPU).</param>
    /// <param name="rows">Training rows.</param>
    /// <param name="read">Reads one row.</param>
    /// <param name="options">The recipe; <see cref="PredictorTrainingOptions.Epochs"/>, <see cref="PredictorTrainingOptions.LearningRate"/> and
    /// <see cref="PredictorTrainingOptions.CancellationToken"/> as for offline training.</param>
    /// <param name="seed">Shuffling seed.</param>
    /// <param name="label">Names the network in a divergence error.</param>
    /// <param name="step">Runs each SGD step (online updates pass their CPU throttle); null runs it directly.</param>
    public static void Run(PredictorNetwork predictor, int rows, RowReader read, PredictorTrainingOptions options, int seed, string label, Action<Action>? step = null)
    {
        ArgumentNullException.ThrowIfNull(predictor);
        ArgumentNullException.ThrowIfNull(read);
        ArgumentNullException.ThrowIfNull(options);
        options.ValidateCommon();
        var size = predictor.InputSize;
        var classes = predictor.Classes;
        var batchSize = options.BatchSize;
        var features = new float[batchSize * size];
        var teacher = new float[batchSize * classes];
        var hard = new long[batchSize];
        // The same bound on the input layer's step as offline training, from the first rows' features in their order.
        var normRows = Math.Min(rows, PredictorOptimizer.NormRows);
        double squaredNorms = 0;
        for (var r = 0; r < normRows; r++)
        {
            read(r, features.AsSpan(0, size), teacher.AsSpan(0, classes));
            squaredNorms += PredictorOptimizer.MeanSquaredNorm(features.AsSpan(0, size), size);
        }
        var inputScale = options.InputStepBound is null ? 1
            : PredictorOptimizer.InputRateScale(predictor, options.LearningRate, squaredNorms / Math.Max(1, normRows), options.InputStepBound);
        using var optimizer = PredictorOptimizer.Create(predictor, options.LearningRate, options.Momentum, options.WeightDecay, inputScale, out var rateScales);
        var random = new Random(seed);
        var order = Enumerable.Range(0, rows).ToArray();
        predictor.train();
        for (var epoch = 0; epoch < options.Epochs; epoch++)
        {
            var lr = LearningRates.At(LearningRateSchedule.Step, options.LearningRate, 0, 1, epoch, options.LearningRateHalvingEpochs);
            PredictorOptimizer.SetLearningRate(optimizer, rateScales, lr);
            random.Shuffle(order);
            for (var start = 0; start < rows; start += batchSize)
            {
                options.CancellationToken.ThrowIfCancellationRequested();
                var n = Math.Min(batchSize, rows - start);
                for (var i = 0; i < n; i++)
                    hard[i] = read(order[start + i], features.AsSpan(i * size, size), teacher.AsSpan(i * classes, classes));
                var (e, b) = (epoch + 1, start / batchSize + 1);
                void Step()
                {
                    using var scope = NewDisposeScope();
                    var x = tensor(features, [batchSize, size]).narrow(0, 0, n);
                    PredictorTraining.Step(predictor, optimizer, x, tensor(teacher, [batchSize, classes]).narrow(0, 0, n),
                        tensor(hard, [batchSize]).narrow(0, 0, n), options, label, e, b, lr);
                }
                if (step is null) Step();
                else step(Step);
            }
        }
        predictor.eval();
    }
}
