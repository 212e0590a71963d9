namespace Gati.Cli.Commands;

internal sealed record FitCachesSettings
{
    public string? BaseModel { get; init; }
    public string? PredictorsModel { get; init; }
    public required DatasetSpec Dataset { get; init; }
    public int[]? Layers { get; init; }
    public PredictorArchitecture[]? Architectures { get; init; }
    public long? TrainRows { get; init; }
    public long HoldoutRows { get; init; } = 5000;

    /// <summary>The predictor recipe as the options set it (the runner adds seed, cancellation and progress).</summary>
    public LearnedCachesEstimator.PredictorOptions Predictor { get; init; } = new LearnedCachesEstimator.Options().Predictor;

    /// <summary>Selector architecture, target precision and training.</summary>
    public SelectorTrainingSettings Selectors { get; init; } = new();
    public string? DumpDir { get; init; }
    public int Seed { get; init; }
    public required string Output { get; init; }
    public string Device { get; init; } = "auto";
}

/// <summary>Runs <c>gati fit-caches</c>.</summary>
internal sealed class FitCachesRunner(IAnsiConsole console)
{
    public int Run(FitCachesSettings settings, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        var context = DeviceContext.Create(settings.Device, settings.Seed);
        var path = settings.BaseModel ?? settings.PredictorsModel!;
        var loaded = context.Gati().LoadModel(path, out _);
        try
        {
            var parts = LoadedModel.Parts(loaded, path);
            var baseModel = parts.BaseTransformer;
            var (split, training, heldOut, trainRows, _) = HeldOutSplit.Create(context, settings.Dataset, settings.HoldoutRows, settings.TrainRows);
            training = parts.Inputs(training);
            heldOut = parts.Inputs(heldOut);

            IReadOnlyList<PredictorTransformer>? predictors = null;
            if (settings.PredictorsModel is not null)
            {
                predictors = LoadedModel.Components(loaded).OfType<PredictorTransformer>()
                    .Where(p => settings.Layers is null || settings.Layers.Contains(p.Layer))
                    .Where(p => settings.Architectures is null || settings.Architectures.Contains(p.Architecture))
                    .ToArray();
                if (predictors.Count == 0) throw new ArgumentException($"{path} holds no predictors for the layers and architectures asked for.");
            }
            var layers = settings.Layers ?? Enumerable.Range(1, parts.BaseModel.CutPoints.Count).ToArray();
            var options = new LearnedCachesEstimator.Options
            {
                Layers = layers,
                Architectures = settings.Architectures ?? [PredictorArchitecture.Conv()],
                Predictors = predictors,
                Predictor = Recipe(settings, cancellation),
                Selector = settings.Selectors,
                HeldOutSet = heldOut,
                FeatureDumpDirectory = settings.DumpDir,
                Device = settings.Device,
                Seed = settings.Seed,
                Status = new Progress<string>(s => console.MarkupLineInterpolated($"{s}")),
            };
            var estimator = context.Gati().LearnedCaches(baseModel, options); // validates the settings before the run is announced
            if (predictors is not null) console.MarkupLineInterpolated($"Reusing {predictors.Count} trained predictors from {path}; training selectors only.");
            console.MarkupLineInterpolated(
                $"Base model {parts.Description} on {parts.Device}; {trainRows} predictor training rows, {settings.HoldoutRows} held-out rows; target precision {settings.Selectors.TargetPrecision:P1}.");
            using var caches = estimator.Fit(training);
            context.Gati().SaveModel(parts.With(caches), split.Schema, settings.Output);

            var table = new Table().Title("learned caches (calibrated on held-out rows)")
                .AddColumn("layer").AddColumn("predictor").AddColumn(new TableColumn("predictor agreement").RightAligned())
                .AddColumn(new TableColumn("threshold").RightAligned()).AddColumn(new TableColumn("exit precision").RightAligned())
                .AddColumn(new TableColumn("hit recall").RightAligned()).AddColumn(new TableColumn("hit rate").RightAligned());
            foreach (var cache in caches.Caches)
            {
                var c = cache.Calibration;
                table.AddRow(cache.Layer.ToString(CultureInfo.InvariantCulture), cache.PredictorArchitecture.ToString(), c.PredictorAgreement.ToString("P2", CultureInfo.InvariantCulture),
                    c.NeverExits ? "never" : c.Threshold.ToString("G4", CultureInfo.InvariantCulture),
                    c.NeverExits ? "-" : c.Precision.ToString("P2", CultureInfo.InvariantCulture), c.Recall.ToString("P1", CultureInfo.InvariantCulture),
                    c.HitRate.ToString("P1", CultureInfo.InvariantCulture));
            }
            console.Write(table);
            console.MarkupLineInterpolated($"Saved base model and {caches.Caches.Count} candidate caches to [bold]{settings.Output}[/] in {clock.Elapsed:hh\\:mm\\:ss}. Next: gati optimize.");
            return 0;
        }
        finally
        {
            LoadedModel.Dispose(loaded);
        }
    }

    private LearnedCachesEstimator.PredictorOptions Recipe(FitCachesSettings settings, CancellationToken cancellation)
    {
        var recipe = settings.Predictor.CopySettingsTo(new LearnedCachesEstimator.PredictorOptions());
        recipe.Seed = settings.Seed;
        recipe.CancellationToken = cancellation;
        recipe.Progress = new Progress<PredictorTrainingProgress>(p =>
        {
            if (p.EpochCompleted)
                console.MarkupLineInterpolated($"[grey]  epoch {p.Epoch} layer {p.Layer} {p.Architecture}: held-out agreement {p.ValidationAgreement:P2}{(p.Stopped ? ", stopped early" : "")}[/]");
        });
        return recipe;
    }
}
