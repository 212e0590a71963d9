using System.Text.Json;

namespace Gati.Cli.Commands;

/// <summary><c>gati demo</c>: the end-to-end early-exit pipeline on Fashion-MNIST.</summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var runtime = new RuntimeArguments();
        var output = new Option<string>("--output-dir", "-o") { Description = "Folder for the models and the report (the base model is reused from here when its settings match).", DefaultValueFactory = _ => "out/demo" };
        var dataDir = new Option<string?>("--data-dir") { Description = "Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)." };
        var width = new Option<int>("--width") { Description = "Base width of the ResNet-18.", DefaultValueFactory = _ => 16 }.Between(1, 1024);
        var baseRows = new Option<long>("--base-train-rows") { Description = "Training rows for the base model.", DefaultValueFactory = _ => 20000 }.AtLeast(1L);
        var baseEpochs = new Option<int>("--base-epochs") { Description = "Base model epochs.", DefaultValueFactory = _ => 4 }.AtLeast(1);
        var cacheLayers = new Option<string>("--cache-layers") { Description = "Candidate cache layers.", DefaultValueFactory = _ => "2-7" }.ParsedBy(v => LayerList.Parse(v));
        var cacheArchitectures = new Option<string>("--cache-architectures") { Description = "Candidate predictor architectures per layer.", DefaultValueFactory = _ => "conv,fc:64" }.ParsedBy(v => ArchitectureList.Parse(v));
        var cacheRows = new Option<long>("--cache-train-rows") { Description = "Predictor training rows.", DefaultValueFactory = _ => 15000 }.AtLeast(1L);
        var cacheEpochs = new Option<int>("--cache-epochs") { Description = "Predictor epochs.", DefaultValueFactory = _ => 4 }.AtLeast(1);
        var holdout = new Option<long>("--holdout-rows") { Description = "Held-out rows (last of the training split): selectors, calibration, optimizer.", DefaultValueFactory = _ => 5000 }.AtLeast(2L);
        var precision = new Option<double>("--target-precision") { Description = "Exit precision each threshold is calibrated to.", DefaultValueFactory = _ => 0.995 }.Share();
        var agreement = new Option<double>("--agreement-target") { Description = "Least agreement with the base model the optimizer accepts.", DefaultValueFactory = _ => 0.99 }.Share();
        var evalRows = new Option<long?>("--eval-rows") { Description = "Test rows to evaluate on (default: all 10,000)." }.AtLeast(1L);
        var command = new Command("demo",
            "End to end on Fashion-MNIST: train (or reuse) a narrow ResNet-18, fit learned caches, choose layers, and evaluate early exit against the full model at batch 1 and 64.");
        command.AddOptions(output, dataDir, width, baseRows, baseEpochs, cacheLayers, cacheArchitectures, cacheRows, cacheEpochs, holdout, precision, agreement, evalRows);
        runtime.AddTo(command);
        var serving = new ServingArguments();
        serving.AddTo(command);
        command.SetRun(runtime, (result, cancellation) =>
        {
            var settings = new DemoSettings(result.GetValue(output)!, result.GetValue(dataDir), result.GetValue(width), result.GetValue(baseRows), result.GetValue(baseEpochs),
                LayerList.Parse(result.GetValue(cacheLayers)!),
                ArchitectureList.Parse(result.GetValue(cacheArchitectures)!),
                result.GetValue(cacheRows), result.GetValue(cacheEpochs), result.GetValue(holdout), result.GetValue(precision), result.GetValue(agreement),
                result.GetValue(evalRows), result.GetValue(runtime.Device)!, serving.Read(result, result.GetValue(runtime.Device)!)[0],
                CommandLineText.Of(result));
            return new DemoRunner(AnsiConsole.Console).Run(settings, cancellation);
        });
        return command;
    }
}

internal sealed record DemoSettings(string OutputDir, string? DataDir, int Width, long BaseTrainRows, int BaseEpochs, int[] CacheLayers,
    PredictorArchitecture[] CacheArchitectures, long CacheTrainRows, int CacheEpochs, long HoldoutRows, double TargetPrecision, double AgreementTarget,
    long? EvalRows, string Device, EarlyExitEngineOptions Serving, string CommandLine = "gati demo");

/// <summary>Runs the demo: the same runners as the individual commands, in order.</summary>
internal sealed class DemoRunner(IAnsiConsole console)
{
    public int Run(DemoSettings settings, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        Directory.CreateDirectory(settings.OutputDir);
        var dataset = new DatasetSpec(DatasetKind.FashionMnist, settings.DataDir);
        var basePath = Path.Combine(settings.OutputDir, "base.zip");
        var stamp = Path.Combine(settings.OutputDir, "base.settings.json");
        var baseSettings = JsonSerializer.Serialize(new { settings.Width, settings.BaseTrainRows, settings.BaseEpochs, Seed = 0, Architecture = "ResNet18" });

        console.MarkupLine("[bold]== 1. base model ==[/]");
        if (File.Exists(basePath) && File.Exists(stamp) && File.ReadAllText(stamp) == baseSettings)
        {
            console.MarkupLineInterpolated($"Reusing {basePath} (trained earlier with the same settings).");
        }
        else
        {
            new TrainBaseRunner(console).Run(new TrainBaseSettings
            {
                Dataset = dataset,
                Recipe = new()
                {
                    Architecture = ResNetArchitecture.ResNet18,
                    BaseWidth = settings.Width,
                    Epochs = settings.BaseEpochs,
                    Seed = 0,
                    Resume = true,
                    Device = settings.Device,
                },
                TrainRows = settings.BaseTrainRows,
                Output = basePath,
            }, cancellation);
            AtomicFile.WriteAllText(stamp, baseSettings);
        }

        console.MarkupLine("[bold]== 2. learned caches ==[/]");
        var candidates = Path.Combine(settings.OutputDir, "caches.zip");
        new FitCachesRunner(console).Run(new FitCachesSettings
        {
            BaseModel = basePath,
            Dataset = dataset,
            Layers = settings.CacheLayers,
            Architectures = settings.CacheArchitectures,
            TrainRows = settings.CacheTrainRows,
            HoldoutRows = settings.HoldoutRows,
            Predictor = new() { Epochs = settings.CacheEpochs, Patience = settings.CacheEpochs },
            Selectors = new() { TargetPrecision = settings.TargetPrecision },
            Output = candidates,
            Device = settings.Device,
        }, cancellation);

        console.MarkupLine("[bold]== 3. choose the caches ==[/]");
        var chosen = Path.Combine(settings.OutputDir, "early-exit.zip");
        new OptimizeRunner(console).Run(new OptimizeSettings(candidates, dataset, settings.AgreementTarget, null, 1, settings.HoldoutRows, 100, chosen, settings.Device,
            settings.Serving, settings.CommandLine));

        console.MarkupLine("[bold]== 4. early exit against the full model (test set) ==[/]");
        new EarlyExitEvaluation(console).RunAndReport(new EarlyExitEvaluationSettings(chosen, dataset, DatasetSplit.Test, settings.EvalRows, [1, 64],
            Path.Combine(settings.OutputDir, "report"), settings.Device, settings.CommandLine, settings.Serving));
        console.MarkupLineInterpolated($"Demo finished in {clock.Elapsed:mm\\:ss}. Models and report in [bold]{settings.OutputDir}[/].");
        return 0;
    }
}
