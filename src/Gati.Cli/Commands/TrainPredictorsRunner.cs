namespace Gati.Cli.Commands;

/// <summary>Settings of <c>gati train-predictors</c>.</summary>
internal sealed record TrainPredictorsSettings
{
    public required string BaseModel { get; init; }
    public required DatasetSpec Dataset { get; init; }
    public required int[] Layers { get; init; }
    public required PredictorArchitecture[] Architectures { get; init; }
    public string Features { get; init; } = "auto";
    public string? DumpDir { get; init; }
    public long MaxDumpBytes { get; init; } = 20_000_000_000;
    public bool Float16 { get; init; }
    public long? TrainRows { get; init; }
    public long HoldoutRows { get; init; } = 5000;
    public int AugmentedCopies { get; init; }

    /// <summary>The training recipe as the options set it (the runner adds what it owns: predictors, base model, held-out rows, seed, checkpoint, progress).</summary>
    public PredictorSetTrainer.Options Recipe { get; init; } = new();
    public int Seed { get; init; }
    public required string Output { get; init; }
    public string? Checkpoint { get; init; }
    public bool Resume { get; init; }
    public string Device { get; init; } = "auto";
}

/// <summary>Runs <c>gati train-predictors</c>: split, extract (dump or stream), train every predictor together, save the chain.</summary>
internal sealed class TrainPredictorsRunner(IAnsiConsole console)
{
    public int Run(TrainPredictorsSettings settings, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        var context = DeviceContext.Create(settings.Device, settings.Seed);
        var loaded = context.Gati().LoadModel(settings.BaseModel, out _);
        try
        {
            var parts = LoadedModel.Parts(loaded, settings.BaseModel);
            var baseModel = parts.BaseTransformer;
            var cutPoints = parts.BaseModel.CutPoints.Count;
            foreach (var layer in settings.Layers)
                if (layer < 1 || layer > cutPoints)
                    throw new ArgumentException($"--layers: {layer} is not a cut point of {parts.Description} (1-{cutPoints}).");

            var (split, trainImages, holdoutImages, imageRows, _) = HeldOutSplit.Create(context, settings.Dataset, settings.HoldoutRows, settings.TrainRows);
            // Augmented copies follow the original rows; the held-out rows stay as they are (they pick the kept epoch).
            // Without copies the split is used as it is (a wrapper would only add a per-row copy and hide its shuffling).
            if (settings.AugmentedCopies > 0)
            {
                if (parts.Prefix.Count > 0)
                    throw new ArgumentException($"--augmented-copies shifts and mirrors the dataset's Image column; {parts.Description} reads {parts.ImageColumnName} through its own transforms.");
                trainImages = context.Data.AugmentImages(trainImages, settings.AugmentedCopies, seed: settings.Seed);
            }
            trainImages = parts.Inputs(trainImages);
            holdoutImages = parts.Inputs(holdoutImages);
            var trainRows = imageRows * (settings.AugmentedCopies + 1);
            using var extractor = context.Gati().ExtractFeatures(baseModel, new FeatureExtractingEstimator.Options { Layers = settings.Layers }).Fit(trainImages);

            var sizes = settings.Layers.Select(l => extractor.LayerShape(l).Size).ToArray();
            var classes = extractor.ClassNames.Count;
            var estimate = FeatureDump.EstimateBytes(trainRows + settings.HoldoutRows, sizes, classes, settings.Float16);
            var dumpDir = settings.DumpDir ?? settings.Output + ".features";
            var (useDump, reason) = ChooseMode(settings, estimate, dumpDir);
            console.MarkupLineInterpolated(
                $"Base model {parts.Description} on {parts.Device}; {settings.Dataset.Name}: {trainRows} training rows{(settings.AugmentedCopies > 0 ? $" ({imageRows} images and {settings.AugmentedCopies} augmented copies of each)" : "")}, {settings.HoldoutRows} held-out rows (the last of the training split).");
            console.MarkupLineInterpolated($"Features: [bold]{(useDump ? "dump" : "stream")}[/] ({reason}).");

            IDataView train, holdout;
            if (useDump)
            {
                var dumpOptions = (string part, long rows) => new FeatureDumpOptions
                {
                    Float16 = settings.Float16,
                    Source = part == "training" && settings.AugmentedCopies > 0
                        ? $"{settings.Dataset.Name} train {part} ({rows} rows: {imageRows} images, then {settings.AugmentedCopies} augmented copies, seed {settings.Seed})"
                        : $"{settings.Dataset.Name} train {part} ({rows} rows)",
                    CancellationToken = cancellation,
                    Progress = new Progress<(long Rows, long Total)>(p => console.MarkupLineInterpolated($"[grey]  dumped {p.Rows}/{p.Total} {part} rows[/]")),
                };
                var dumpClock = Stopwatch.StartNew();
                FeatureDump.Write(extractor, trainImages, Path.Combine(dumpDir, "train"), dumpOptions("training", trainRows));
                FeatureDump.Write(extractor, holdoutImages, Path.Combine(dumpDir, "holdout"), dumpOptions("held-out", settings.HoldoutRows));
                console.MarkupLineInterpolated($"Feature dump ready in {dumpDir} ({dumpClock.Elapsed.TotalSeconds:F0} s).");
                // Only the requested layers: a dump of more layers (an earlier run's) serves any subset of them.
                train = context.Data.LoadFeatureDump(Path.Combine(dumpDir, "train"), settings.Layers);
                holdout = context.Data.LoadFeatureDump(Path.Combine(dumpDir, "holdout"), settings.Layers);
            }
            else
            {
                train = extractor.Transform(trainImages);
                holdout = extractor.Transform(holdoutImages);
            }

            var specs = settings.Layers.SelectMany(layer => settings.Architectures.Select(a => new PredictorSpec(layer, a))).ToArray();
            console.MarkupLineInterpolated($"Training {specs.Length} predictors: layers {string.Join(",", settings.Layers)} x {string.Join(", ", settings.Architectures.Select(a => a.ToString()))}.");
            var trainer = (IProgress<PredictorTrainingProgress> reporter) =>
            {
                var options = settings.Recipe.CopySettingsTo(new PredictorSetTrainer.Options { Predictors = specs });
                options.BaseModel = baseModel;
                options.Seed = settings.Seed;
                options.Device = settings.Device;
                options.ValidationSet = holdout;
                options.CheckpointPath = settings.Checkpoint ?? settings.Output + ".ckpt";
                options.Resume = settings.Resume;
                options.CancellationToken = cancellation;
                options.Progress = reporter;
                return context.Gati().Predictors(options);
            };
            var predictors = LiveProgress.Run(console, "training predictors", settings.Recipe.Epochs,
                bar => trainer(new Reporter(console, bar, trainRows)).Fit(train).Cast<PredictorTransformer>().ToArray());

            var chain = new TransformerChain<ITransformer>([.. parts.Prefix, baseModel, extractor, .. predictors]);
            context.Gati().SaveModel(chain, split.Schema, settings.Output);
            var table = new Table().AddColumn("layer");
            foreach (var architecture in settings.Architectures) table.AddColumn(new TableColumn(architecture.ToString()).RightAligned());
            foreach (var layer in settings.Layers)
                table.AddRow([layer.ToString(CultureInfo.InvariantCulture), .. settings.Architectures.Select(a =>
                {
                    var p = predictors.Single(x => x.Layer == layer && x.Architecture == a);
                    return $"{p.Summary.ValidationAgreement:P2} (epoch {p.Summary.BestEpoch}/{p.Summary.EpochsRun})";
                })]);
            table.Title("held-out agreement with the base model (best epoch / epochs run)");
            console.Write(table);
            console.MarkupLineInterpolated($"Saved base model, feature extractor and {predictors.Length} predictors to [bold]{settings.Output}[/] in {clock.Elapsed:hh\\:mm\\:ss}.");
            foreach (var predictor in predictors) predictor.Dispose();
            return 0;
        }
        finally
        {
            LoadedModel.Dispose(loaded);
        }
    }

    private static (bool Dump, string Reason) ChooseMode(TrainPredictorsSettings settings, long estimate, string dumpDir)
    {
        var size = $"{estimate / 1e9:F2} GB";
        switch (settings.Features)
        {
            case "dump":
                return (true, $"requested; {size}");
            case "stream":
                return (false, $"requested; a dump would take {size}");
        }
        if (estimate > settings.MaxDumpBytes)
            return (false, $"a dump would take {size}, more than --max-dump-gb {settings.MaxDumpBytes / 1e9:F1}");
        var root = Path.GetPathRoot(Path.GetFullPath(dumpDir))!;
        var free = new DriveInfo(root).AvailableFreeSpace;
        if (free < estimate * 1.1)
            return (false, $"a dump would take {size} but only {free / 1e9:F1} GB are free");
        return (true, $"{size} fits --max-dump-gb {settings.MaxDumpBytes / 1e9:F1} and the free disk space");
    }

    private sealed class Reporter(IAnsiConsole console, Action<double, string>? bar, long rowsPerEpoch) : IProgress<PredictorTrainingProgress>
    {
        private DateTime _last = DateTime.MinValue;

        public void Report(PredictorTrainingProgress p)
        {
            if (bar is not null && !p.EpochCompleted)
                bar(p.Epoch - 1 + Math.Min(1.0, (double)p.Rows / rowsPerEpoch), $"epoch {p.Epoch}/{p.TotalEpochs}  mean loss {p.Loss:F4}  {p.RowsPerSecond:F0} rows/s");
            if (p is { EpochCompleted: true, Epoch: 0 })
            {
                console.MarkupLineInterpolated($"start  layer {p.Layer} {p.Architecture}: the base model's head, held-out agreement {p.ValidationAgreement:P2}{(p.Stopped ? " (every row: kept, not trained)" : "")}{(p.Restored ? " (restored from checkpoint)" : "")}");
                return;
            }
            if (p.EpochCompleted)
            {
                var agreement = p.ValidationAgreement is { } a ? $", held-out agreement {a:P2}" : "";
                var best = p.BestEpoch is { } b ? $" (best epoch {b})" : "";
                var stopped = p.Stopped ? ", stopped early" : "";
                var restored = p.Restored ? " (restored from checkpoint)" : "";
                var scaled = p.InputRateScale is { } s ? $", input layer's rate x {s:G3}" : "";
                console.MarkupLineInterpolated($"epoch {p.Epoch}/{p.TotalEpochs} layer {p.Layer} {p.Architecture}: loss {p.Loss:F4}{agreement}{best}{stopped}{scaled}{restored}");
                return;
            }
            if (bar is not null || DateTime.UtcNow - _last < TimeSpan.FromSeconds(30)) return;
            _last = DateTime.UtcNow;
            console.MarkupLineInterpolated($"[grey]  epoch {p.Epoch}: {p.Rows} rows, mean loss {p.Loss:F4}, {p.RowsPerSecond:F0} rows/s[/]");
        }
    }
}
