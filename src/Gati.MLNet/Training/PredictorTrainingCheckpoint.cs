using System.Globalization;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>
/// The checkpoint of <see cref="PredictorTraining"/>: the settings a resume must match, and per predictor its current
/// weights, optimizer state, best weights and progress, in a <see cref="TrainingCheckpoint"/> file.
/// </summary>
internal static class PredictorTrainingCheckpoint
{
    private const string CheckpointKind = "predictors";

    public static Dictionary<string, string> Settings(PredictorTrainingOptions options, IReadOnlyList<PredictorSpec> specs, int seed, long? rows, int classes) => new()
    {
        ["predictors"] = string.Join("; ", specs.Select(s => $"{s.Layer}:{s.Architecture.Id}:{s.Feature}")),
        ["classes"] = classes.ToString(CultureInfo.InvariantCulture),
        ["epochs"] = options.Epochs.ToString(CultureInfo.InvariantCulture),
        ["patience"] = options.Patience?.ToString(CultureInfo.InvariantCulture) ?? "none",
        ["batchSize"] = options.BatchSize.ToString(CultureInfo.InvariantCulture),
        ["learningRate"] = options.LearningRate.ToString("R", CultureInfo.InvariantCulture),
        ["inputStepBound"] = options.InputStepBound?.ToString("R", CultureInfo.InvariantCulture) ?? "none",
        ["standardizeInputs"] = options.StandardizeInputs ? "yes" : "no",
        ["halvingEpochs"] = options.LearningRateHalvingEpochs.ToString(CultureInfo.InvariantCulture),
        ["momentum"] = options.Momentum.ToString("R", CultureInfo.InvariantCulture),
        ["weightDecay"] = options.WeightDecay.ToString("R", CultureInfo.InvariantCulture),
        ["alpha"] = options.Alpha.ToString("R", CultureInfo.InvariantCulture),
        ["temperature"] = options.Temperature.ToString("R", CultureInfo.InvariantCulture),
        ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
        ["trainingRows"] = rows?.ToString(CultureInfo.InvariantCulture) ?? "unknown",
        ["validation"] = options.ValidationSet is null ? "none" : options.ValidationSet.GetRowCount()?.ToString(CultureInfo.InvariantCulture) ?? "unknown",
    };

    public static void Write(string path, Dictionary<string, string> settings, List<PredictorTrainee> trainees, int epochsCompleted)
    {
        var sections = new List<(string, byte[])>();
        for (var i = 0; i < trainees.Count; i++)
        {
            sections.Add(($"p{i}.current", TrainingCheckpoint.ModuleBytes(trainees[i].Network)));
            sections.Add(($"p{i}.optimizer", TrainingCheckpoint.OptimizerBytes(trainees[i].Optimizer)));
            if (trainees[i].Best is { } best) sections.Add(($"p{i}.best", best));
        }
        TrainingCheckpoint.Write(path, new TrainingCheckpoint.Header
        {
            Kind = CheckpointKind,
            Settings = settings,
            EpochsCompleted = epochsCompleted,
            State = JsonSerializer.Serialize(trainees.Select(t => t.State).ToArray(), TrainingCheckpoint.Json),
        }, sections);
    }

    public static int Restore(string path, Dictionary<string, string> settings, List<PredictorTrainee> trainees, Device device, PredictorTrainingOptions options)
    {
        var header = TrainingCheckpoint.ReadHeader(path);
        TrainingCheckpoint.CheckCompatible(header, CheckpointKind, settings, path);
        var states = JsonSerializer.Deserialize<PredictorTraineeState[]>(header.State ?? "[]", TrainingCheckpoint.Json) ?? [];
        if (states.Length != trainees.Count) throw new InvalidDataException($"Checkpoint {path} holds {states.Length} predictors, expected {trainees.Count}.");
        var sections = TrainingCheckpoint.ReadSections(path);
        for (var i = 0; i < trainees.Count; i++)
        {
            var trainee = trainees[i];
            trainee.Network.to(torch.CPU);
            TrainingCheckpoint.LoadModule(TrainingCheckpoint.Section(sections, $"p{i}.current", path), trainee.Network, $"{trainee.Spec} predictor in {path}");
            trainee.Network.to(device);
            TrainingCheckpoint.LoadOptimizer(TrainingCheckpoint.Section(sections, $"p{i}.optimizer", path), trainee.Optimizer);
            trainee.Best = sections.GetValueOrDefault($"p{i}.best");
            trainee.State = states[i];
            foreach (var h in states[i].History)
            {
                options.Progress?.Report(new PredictorTrainingProgress
                {
                    Epoch = (int)h[0], TotalEpochs = options.Epochs, Layer = trainee.Spec.Layer, Architecture = trainee.Spec.Architecture,
                    Rows = 0, Loss = h[1], RowsPerSecond = double.NaN, ValidationAgreement = double.IsNaN(h[2]) ? null : h[2],
                    BestEpoch = states[i].KeptEpoch, EpochCompleted = true, Restored = true,
                    Stopped = states[i].Stopped && (int)h[0] == states[i].EpochsRun, InputRateScale = trainee.InputRateScale,
                });
            }
        }
        return header.EpochsCompleted;
    }
}
