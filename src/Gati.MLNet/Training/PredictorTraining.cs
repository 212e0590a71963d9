using System.Diagnostics;
using System.Globalization;
using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>
/// Trains several predictors together: one pass over the training data per epoch feeds every predictor that is
/// still training (features are read, or computed by the base model, once per epoch for all of them), each
/// with its own SGD optimizer; one pass over the held-out data per epoch measures each one's agreement.
/// </summary>
internal static class PredictorTraining
{
    public static IReadOnlyList<PredictorTransformer> Run(IHost host, IDataView input, PredictorTrainingOptions options, IReadOnlyList<PredictorSpec> specs)
    {
        if (specs.Count == 0) throw new ArgumentException("Train at least one predictor.", nameof(specs));
        if (specs.Select(s => s.Score).Distinct().Count() != specs.Count)
            throw new ArgumentException("Two predictors would write the same output column; give them distinct architectures or column names.", nameof(specs));
        TorchRuntime.EnsureInitialized();
        var device = DeviceOptions.Resolve(options.Device, host);
        var seed = options.Seed ?? (host as IHostEnvironmentInternal)?.Seed ?? 0;

        var teacherLabel = TrainingColumns.RequireKeyLabel(input.Schema, options.TeacherLabelColumnName, out var classes);
        var teacherLogits = TrainingColumns.RequireImage(input.Schema, options.TeacherLogitsColumnName, classes);
        var classNames = Annotations.TryGetKeyNames(teacherLabel) ?? Enumerable.Range(0, classes).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray();
        var features = specs.Select(s => s.Feature).Distinct().ToArray();
        var sizes = features.Select(f => ((VectorDataViewType)TrainingColumns.RequireImage(input.Schema, f).Type).Size).ToArray();
        // [C, H, W] where the column says (Grid predictors need it; the others read the flattened values).
        var shapes = features.Select(f => ((VectorDataViewType)input.Schema[f].Type).Dimensions is [var c, var h, var w] ? new TensorShape(c, h, w) : (TensorShape?)null).ToArray();
        var reader = new VectorBatchReader(input, [.. features, options.TeacherLogitsColumnName], options.TeacherLabelColumnName,
            options.ShufflePoolSize, options.ShufflePoolBytes);
        if (options.ValidationSet is { } validation)
        {
            foreach (var f in features) TrainingColumns.RequireImage(validation.Schema, f, sizes[Array.IndexOf(features, f)]);
            TrainingColumns.RequireKeyLabel(validation.Schema, options.TeacherLabelColumnName, out var validationClasses);
            if (validationClasses != classes)
                throw new ArgumentException($"Held-out '{options.TeacherLabelColumnName}' has {validationClasses} classes, training data {classes}.");
        }

        var trainees = new List<PredictorTrainee>();
        try
        {
            // All networks from one seeded draw, in spec order, so a set trains the same in any process.
            var networks = SeededInit.Create(seed, () =>
            {
                var created = new List<PredictorNetwork>();
                try
                {
                    foreach (var spec in specs)
                    {
                        var f = Array.IndexOf(features, spec.Feature);
                        if (spec.Architecture.Kind == PredictorKind.Grid && shapes[f] is null)
                            throw new ArgumentException($"{spec}: column '{spec.Feature}' does not say its feature map's shape [C, H, W], which a Grid predictor needs (extract it with ExtractFeatures or load it from a dump).");
                        created.Add(PredictorNetwork.Create(spec.Architecture, sizes[f], classes, shapes[f]));
                    }
                }
                catch
                {
                    foreach (var n in created) n.Dispose();
                    throw;
                }
                return created;
            });
            try
            {
                var fromHead = BaseHeadStart.Apply(host, input, options, specs, networks);
                var moments = Moments(reader, options.BatchSize);
                for (var i = 0; i < specs.Count; i++)
                {
                    var network = networks[i];
                    network.to(device);
                    var f = Array.IndexOf(features, specs[i].Feature);
                    // Features are standardised while the network trains (one mean and one spread per feature column:
                    // post-ReLU features are all positive with a mean above their spread, and on a pretrained backbone's
                    // early cut points plain SGD at the recipe's rate stayed at a constant answer); a network started as the
                    // base model's head reads them as they are.
                    var standardized = !fromHead[i] && options.StandardizeInputs;
                    var standardization = standardized ? (moments[f].Mean, moments[f].Scale) : (0.0, 1.0);
                    var meanSquaredNorm = standardized ? reader.Sizes[f] : moments[f].MeanSquaredNorm;
                    var scale = options.InputStepBound is null ? 1 : PredictorOptimizer.InputRateScale(network, options.LearningRate, meanSquaredNorm, options.InputStepBound);
                    var optimizer = PredictorOptimizer.Create(network, options.LearningRate, options.Momentum, options.WeightDecay, scale, out var rateScales);
                    trainees.Add(new PredictorTrainee(specs[i], network, optimizer, rateScales, f, fromHead[i], standardization));
                }
            }
            catch
            {
                foreach (var orphan in networks.Skip(trainees.Count)) orphan.Dispose();
                throw;
            }

            NativeNumerics.EnsureSoundForTraining(host, NativeNumerics.ForLinear(options.BatchSize, sizes, classes), device);
            var settings = PredictorTrainingCheckpoint.Settings(options, specs, seed, input.GetRowCount(), classes);
            if (BaseHeadStart.Setting(specs, trainees.Select(t => t.FromHead).ToArray()) is { } started) settings["baseHeadStart"] = started;
            var startEpoch = options.Resume && options.CheckpointPath is { } resumePath && File.Exists(resumePath)
                ? PredictorTrainingCheckpoint.Restore(resumePath, settings, trainees, device, options)
                : 0;

            Train(options, trainees, reader, startEpoch, seed, device, classes, settings);

            var results = new List<PredictorTransformer>();
            foreach (var trainee in trainees)
            {
                if (trainee.Best is { } best)
                {
                    trainee.Network.to(torch.CPU);
                    TrainingCheckpoint.LoadModule(best, trainee.Network, $"{trainee.Spec} predictor");
                    trainee.Network.to(device);
                }
                trainee.Network.FoldInputStandardization(trainee.Input.Mean, trainee.Input.Scale);
                trainee.Network.eval();
                var state = trainee.State;
                var summary = new PredictorTrainingSummary(state.KeptEpoch ?? state.EpochsRun, state.EpochsRun,
                    double.IsFinite(state.BestAgreement) ? state.BestAgreement : double.NaN);
                trainee.Optimizer.Dispose();
                results.Add(new PredictorTransformer(host, new SharedModule<PredictorNetwork>(trainee.Network, device), trainee.Spec.Layer, classNames,
                    trainee.Spec.Feature, trainee.Spec.Score, trainee.Spec.Predicted, options.InferenceBatchSize, summary));
            }
            trainees.Clear();
            return results;
        }
        finally
        {
            foreach (var trainee in trainees) trainee.Dispose();
        }
    }

    private static void Train(PredictorTrainingOptions options, List<PredictorTrainee> trainees, VectorBatchReader reader, int startEpoch, int seed,
        Device device, int classes, Dictionary<string, string> settings)
    {
        var buffers = reader.AllocateBuffers(options.BatchSize);
        var labels = new long[options.BatchSize];
        var teacherIndex = buffers.Length - 1;
        if (startEpoch == 0) EvaluateStart(options, trainees.Where(t => t.FromHead).ToList(), reader.Sizes, device);
        for (var epoch = startEpoch; epoch < options.Epochs; epoch++)
        {
            var active = trainees.Where(t => !t.State.Stopped).ToList();
            if (active.Count == 0) break;
            var lr = LearningRates.At(LearningRateSchedule.Step, options.LearningRate, 0, 1, epoch, options.LearningRateHalvingEpochs);
            foreach (var trainee in active)
            {
                PredictorOptimizer.SetLearningRate(trainee.Optimizer, trainee.RateScales, lr);
                trainee.Network.train();
            }
            var random = new Random(Seeds.Derive(seed, epoch, 0x9ed));
            var clock = Stopwatch.StartNew();
            var lossSums = active.Select(_ => torch.zeros(1, dtype: ScalarType.Float64, device: device)).ToArray();
            try
            {
                long rows = 0;
                var batch = 0;
                foreach (var count in reader.Read(options.BatchSize, buffers, labels, random))
                {
                    options.CancellationToken.ThrowIfCancellationRequested();
                    using (var scope = NewDisposeScope())
                    {
                        var teacher = tensor(buffers[teacherIndex], [options.BatchSize, classes]).narrow(0, 0, count).to(device);
                        var hard = tensor(labels, [options.BatchSize]).narrow(0, 0, count).to(device);
                        var inputs = new Tensor?[buffers.Length - 1];
                        for (var i = 0; i < active.Count; i++)
                        {
                            var trainee = active[i];
                            var f = trainee.FeatureIndex;
                            inputs[f] ??= tensor(buffers[f], [options.BatchSize, reader.Sizes[f]]).narrow(0, 0, count).to(device);
                            var loss = Step(trainee.Network, trainee.Optimizer, trainee.Scaled(inputs[f]!), teacher, hard, options, $"{trainee.Spec} predictor", epoch + 1, batch + 1, lr);
                            using var noGrad = no_grad();
                            lossSums[i].PlusScaledInPlace(loss.detach().to(ScalarType.Float64), count);
                        }
                    }
                    rows += count;
                    if (options.Progress is not null && ++batch % options.ProgressInterval == 0)
                    {
                        options.Progress.Report(new PredictorTrainingProgress
                        {
                            Epoch = epoch + 1, TotalEpochs = options.Epochs, Rows = rows, RowsPerSecond = rows / clock.Elapsed.TotalSeconds,
                            Loss = lossSums.Sum(l => l.item<double>()) / rows / active.Count,
                        });
                    }
                }
                if (rows == 0) throw new ArgumentException("The training data has no rows.");
                var seconds = clock.Elapsed.TotalSeconds;
                var agreements = options.ValidationSet is { } validation
                    ? Agreements(validation, active, reader.Sizes, options, device)
                    : null;
                for (var i = 0; i < active.Count; i++)
                {
                    var trainee = active[i];
                    var state = trainee.State;
                    var loss = lossSums[i].item<double>() / rows;
                    state.EpochsRun = epoch + 1;
                    var agreement = agreements?[i];
                    state.History.Add([epoch + 1, loss, agreement ?? double.NaN]);
                    if (agreement is { } a)
                    {
                        if (a > state.BestAgreement)
                        {
                            state.BestAgreement = a;
                            state.BestEpoch = epoch + 1;
                            trainee.Best = TrainingCheckpoint.ModuleBytes(trainee.Network);
                        }
                        else if (options.Patience is { } patience && epoch + 1 - state.BestEpoch >= patience)
                        {
                            state.Stopped = true;
                        }
                    }
                    options.Progress?.Report(new PredictorTrainingProgress
                    {
                        Epoch = epoch + 1, TotalEpochs = options.Epochs, Layer = trainee.Spec.Layer, Architecture = trainee.Spec.Architecture,
                        Rows = rows, Loss = loss, RowsPerSecond = rows / seconds, ValidationAgreement = agreement,
                        BestEpoch = state.KeptEpoch, Stopped = state.Stopped, EpochCompleted = true,
                        InputRateScale = trainee.InputRateScale,
                    });
                }
                if (options.CheckpointPath is { } path) PredictorTrainingCheckpoint.Write(path, settings, trainees, epoch + 1);
            }
            finally
            {
                foreach (var sum in lossSums) sum.Dispose();
            }
        }
    }

    /// <summary>One SGD step of the distillation recipe: offline training and online fine-tuning (<see cref="PredictorFineTuning"/>) share it.</summary>
    internal static Tensor Step(PredictorNetwork network, SGD optimizer, Tensor input, Tensor teacher, Tensor hard, PredictorTrainingOptions options,
        string label, int epoch, int batch, double lr)
    {
        var loss = DistillationLoss.Compute(network.forward(input), teacher, hard, options.Alpha, options.Temperature);
        optimizer.zero_grad();
        loss.backward();
        NonFiniteGuard.Check(loss, network, label, epoch, batch, lr);
        network.ClipGradients();
        optimizer.step();
        return loss;
    }

    /// <summary>
    /// "Epoch 0" of predictors that start as the base model's head: their held-out agreement before any step becomes the
    /// best so far, so training keeps the start unless an epoch beats it (and patience counts from it). A start that
    /// agrees on every held-out row cannot be beaten (on the last layer it is the base model's own answer), so that
    /// predictor stops at once.
    /// </summary>
    private static void EvaluateStart(PredictorTrainingOptions options, List<PredictorTrainee> started, IReadOnlyList<int> sizes, Device device)
    {
        if (started.Count == 0 || options.ValidationSet is not { } validation) return;
        var agreements = Agreements(validation, started, sizes, options, device);
        for (var i = 0; i < started.Count; i++)
        {
            var trainee = started[i];
            var state = trainee.State;
            state.BestAgreement = agreements[i];
            state.BestEpoch = 0;
            state.History.Add([0, double.NaN, agreements[i]]);
            state.Stopped = agreements[i] >= 1;
            trainee.Best = TrainingCheckpoint.ModuleBytes(trainee.Network);
            options.Progress?.Report(new PredictorTrainingProgress
            {
                Epoch = 0, TotalEpochs = options.Epochs, Layer = trainee.Spec.Layer, Architecture = trainee.Spec.Architecture,
                Rows = 0, Loss = double.NaN, RowsPerSecond = double.NaN, ValidationAgreement = agreements[i], BestEpoch = 0,
                Stopped = state.Stopped, EpochCompleted = true, InputRateScale = trainee.InputRateScale,
            });
        }
    }

    /// <summary>
    /// Per feature column, over the first <see cref="PredictorOptimizer.NormRows"/> training rows in file order (the same
    /// rows in every run and on resume, so what is derived from them is too): the mean squared norm of a row, and the
    /// mean and standard deviation of one value (a spread of 0 or one that is not finite gives 1).
    /// </summary>
    private static (double MeanSquaredNorm, double Mean, double Scale)[] Moments(VectorBatchReader reader, int batchSize)
    {
        var buffers = reader.AllocateBuffers(batchSize);
        var labels = new long[batchSize];
        var squares = new double[reader.Sizes.Count];
        var sums = new double[reader.Sizes.Count];
        var rows = 0;
        foreach (var count in reader.Read(batchSize, buffers, labels, shuffle: null))
        {
            var take = Math.Min(count, PredictorOptimizer.NormRows - rows);
            for (var f = 0; f < sums.Length; f++)
            {
                var values = buffers[f].AsSpan(0, take * reader.Sizes[f]);
                squares[f] += take * PredictorOptimizer.MeanSquaredNorm(values, reader.Sizes[f]);
                double sum = 0;
                foreach (var v in values) sum += v;
                sums[f] += sum;
            }
            rows += take;
            if (rows >= PredictorOptimizer.NormRows) break;
        }
        if (rows == 0) throw new ArgumentException("The training data has no rows.");
        return squares.Select((s, f) =>
        {
            var meanSquaredNorm = s / rows;
            var mean = sums[f] / ((double)rows * reader.Sizes[f]);
            var variance = meanSquaredNorm / reader.Sizes[f] - mean * mean;
            var spread = Math.Sqrt(Math.Max(0, variance));
            return spread > 0 && double.IsFinite(spread) && double.IsFinite(mean) ? (meanSquaredNorm, mean, spread) : (meanSquaredNorm, 0.0, 1.0);
        }).ToArray();
    }

    /// <summary>Agreement of each predictor's argmax with the teacher label on held-out data.</summary>
    private static double[] Agreements(IDataView validation, List<PredictorTrainee> trainees, IReadOnlyList<int> sizes, PredictorTrainingOptions options, Device device)
    {
        var features = trainees.Select(t => t.Spec.Feature).Distinct().ToArray();
        var reader = new VectorBatchReader(validation, features, options.TeacherLabelColumnName, poolRows: 1);
        var batchSize = options.InferenceBatchSize;
        var buffers = reader.AllocateBuffers(batchSize);
        var labels = new long[batchSize];
        var agree = new long[trainees.Count];
        long total = 0;
        foreach (var trainee in trainees) trainee.Network.eval();
        using (var noGrad = no_grad())
        {
            foreach (var count in reader.Read(batchSize, buffers, labels, shuffle: null))
            {
                using var scope = NewDisposeScope();
                var hard = tensor(labels, [batchSize]).narrow(0, 0, count).to(device);
                var inputs = new Tensor?[features.Length];
                for (var i = 0; i < trainees.Count; i++)
                {
                    var f = Array.IndexOf(features, trainees[i].Spec.Feature);
                    inputs[f] ??= tensor(buffers[f], [batchSize, reader.Sizes[f]]).narrow(0, 0, count).to(device);
                    agree[i] += trainees[i].Network.forward(trainees[i].Scaled(inputs[f]!)).argmax(1).eq(hard).sum().item<long>();
                }
                total += count;
            }
        }
        if (total == 0) throw new ArgumentException("The held-out data (ValidationSet) has no rows.");
        return agree.Select(a => (double)a / total).ToArray();
    }
}
