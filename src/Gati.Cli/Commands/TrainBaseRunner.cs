namespace Gati.Cli.Commands;

/// <summary>Settings of <c>gati train-base</c>.</summary>
internal sealed record TrainBaseSettings
{
    public required DatasetSpec Dataset { get; init; }

    /// <summary>
    /// The trainer's settings with the library's defaults (architecture, width, schedule, augmentation, seed, device,
    /// resuming); the runner fills in the checkpoint path, validation set, progress and cancellation.
    /// </summary>
    public ResNetTrainer.Options Recipe { get; init; } = new();
    public long? TrainRows { get; init; }
    public long? TestRows { get; init; }
    public bool ValidateEachEpoch { get; init; }
    public required string Output { get; init; }
    public string? Checkpoint { get; init; }
}

/// <summary>Runs <c>gati train-base</c>: train, save atomically, evaluate on the test split.</summary>
internal sealed class TrainBaseRunner(IAnsiConsole console)
{
    public int Run(TrainBaseSettings settings, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        var recipe = settings.Recipe;
        var context = new MLContext(recipe.Seed ?? 0);
        var train = settings.Dataset.Load(context, DatasetSplit.Train, settings.TrainRows);
        var test = settings.Dataset.Load(context, DatasetSplit.Test, settings.TestRows);
        var checkpoint = settings.Checkpoint ?? settings.Output + ".ckpt";
        recipe.CheckpointPath = checkpoint;
        recipe.ValidationSet = settings.ValidateEachEpoch ? test : null;
        recipe.CancellationToken = cancellation;
        var trainer = (IProgress<ResNetTrainingProgress>? reporter) =>
        {
            recipe.Progress = reporter;
            return context.Gati().ResNet(recipe);
        };
        trainer(null); // the trainer validates its settings: reject a bad one before announcing the run

        var rowCount = train.GetRowCount()?.ToString(CultureInfo.InvariantCulture) ?? "?";
        console.MarkupLineInterpolated(
            $"Training [bold]{recipe.Architecture}[/] (width {recipe.BaseWidth}) on [bold]{settings.Dataset.Name}[/] ({rowCount} rows), {recipe.Epochs} epochs, batch {recipe.BatchSize}, lr {recipe.LearningRate}, device {recipe.Device}.");
        console.MarkupLineInterpolated($"Checkpoint: {checkpoint}{(recipe.Resume ? " (resuming if present)" : "")}");
        using var model = LiveProgress.Run(console, "training", recipe.Epochs, bar => trainer(new TrainingReporter(console, bar)).Fit(train));
        var trainTime = clock.Elapsed;

        context.Gati().SaveModel(model, train.Schema, settings.Output);
        console.MarkupLineInterpolated($"Saved model to [bold]{settings.Output}[/] (device used: {model.Device}).");
        if (model.TrainingHistory.Count < recipe.Epochs)
            console.MarkupLineInterpolated(
                $"[yellow]note:[/] stopped after epoch {model.TrainingHistory.Count} of {recipe.Epochs} (--epochs-this-run); run again with --resume to continue the schedule from {checkpoint}.");

        var evaluation = Evaluation.Run(context, model, test);
        console.MarkupLineInterpolated(
            $"Test accuracy: [bold]{evaluation.Accuracy:P2}[/] on {evaluation.Rows} images. Training wall time {trainTime:hh\\:mm\\:ss}, total {clock.Elapsed:hh\\:mm\\:ss}.");
        return 0;
    }

    /// <summary>One line per epoch; within an epoch a progress bar in a terminal, or a line every 15 s in logs.</summary>
    private sealed class TrainingReporter(IAnsiConsole console, Action<double, string>? bar) : IProgress<ResNetTrainingProgress>
    {
        private DateTime _lastBatchLine = DateTime.MinValue;

        public void Report(ResNetTrainingProgress p)
        {
            if (bar is not null)
            {
                var fraction = p.EpochCompleted ? 1.0 : p.BatchesPerEpoch is { } n && n > 0 ? (double)p.Batch / n : 0;
                bar(p.Epoch - 1 + fraction, $"epoch {p.Epoch}/{p.TotalEpochs}  loss {p.Loss:F4}  acc {p.Accuracy:P1}  {p.ImagesPerSecond:F0} img/s");
            }
            if (p.EpochCompleted)
            {
                var validation = p.ValidationAccuracy is { } v ? $", test acc {v:P2}" : "";
                var restored = p.Restored ? " (restored from checkpoint)" : "";
                console.MarkupLineInterpolated(
                    $"epoch {p.Epoch}/{p.TotalEpochs}: loss {p.Loss:F4}, train acc {p.Accuracy:P2}{validation}, {p.ImagesPerSecond:F0} img/s, {p.Elapsed.TotalSeconds:F0} s{restored}");
                return;
            }
            if (bar is not null || DateTime.UtcNow - _lastBatchLine < TimeSpan.FromSeconds(15)) return;
            _lastBatchLine = DateTime.UtcNow;
            var of = p.BatchesPerEpoch is { } total ? $"/{total}" : "";
            console.MarkupLineInterpolated(
                $"[grey]  epoch {p.Epoch} batch {p.Batch}{of}: loss {p.Loss:F4}, acc {p.Accuracy:P1}, {p.ImagesPerSecond:F0} img/s, lr {p.LearningRate:G3}[/]");
        }
    }
}
