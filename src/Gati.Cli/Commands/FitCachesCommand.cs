using Gati.MLNet.Models.Selectors;

namespace Gati.Cli.Commands;

/// <summary><c>gati fit-caches</c>: learned caches (predictor + selector + calibrated threshold) for a base model.</summary>
internal static class FitCachesCommand
{
    public static Command Create()
    {
        var arguments = new CommandArguments();
        var baseModel = new Option<string?>("--base-model", "-b") { Description = "Base model zip (gati train-base): predictors are trained here." };
        var predictorsModel = new Option<string?>("--predictors-model") { Description = "Model zip from gati train-predictors: reuse its base model and predictors, train only selectors." };
        var layers = new Option<string?>("--layers") { Description = "Layers that get caches, e.g. 2-7 (default: all layers of --predictors-model, else every cut point of the base model)." }.ParsedBy(v => LayerList.Parse(v!));
        var architectures = new Option<string?>("--architectures") { Description = "Predictor architectures (candidates per layer), e.g. conv or conv,fc:64 (default: conv; with --predictors-model: all of its)." }.ParsedBy(v => ArchitectureList.Parse(v!));
        var selector = new Option<string>("--selector") { Description = "Selector network: sorted[:hidden] (MLP over sorted log-probabilities), raw[:hidden], or reference (Linear(k, 2) as in the paper's code).", DefaultValueFactory = _ => "sorted:16" }.ParsedBy(v => SelectorArchitecture.Parse(v));
        var precision = new Option<double>("--target-precision") { Description = "Precision of exits (agreement with the base model among rows that exit) each threshold is calibrated to.", DefaultValueFactory = _ => 0.995 }.Share();
        var trainRows = new Option<long?>("--train-rows") { Description = "Predictor training rows from the start of the training split (default: all before the held-out rows)." }.AtLeast(1L);
        var holdoutRows = new Option<long>("--holdout-rows") { Description = "The last N rows of the training split are held out: half train selectors, half calibrate thresholds.", DefaultValueFactory = _ => 5000 }.AtLeast(2L);
        var epochs = new Option<int>("--epochs") { Description = "Maximum predictor epochs.", DefaultValueFactory = _ => 20 }.AtLeast(1);
        var patience = new Option<int>("--patience") { Description = "Early stop after N epochs without held-out improvement.", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var selectorEpochs = new Option<int>("--selector-epochs") { Description = "Selector epochs.", DefaultValueFactory = _ => 30 }.AtLeast(1);
        var lr = new Option<double>("--lr") { Description = "Predictor learning rate (halved every 5 epochs).", DefaultValueFactory = _ => 0.05 }.Positive();
        var noStandardize = new Option<bool>("--no-standardize") { Description = "Train predictors on the features as they are (by default on features standardised per cut point, folded into the predictor's first layer afterwards)." };
        var dumpDir = new Option<string?>("--dump-dir") { Description = "Dump predictor training features here instead of streaming them from the base model each epoch." };
        var seed = new Option<int>("--seed") { Description = "Random seed.", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--output", "-o") { Description = "Model zip to write: base model + learned caches (every candidate).", Required = true };
        var command = arguments.CreateCommand("fit-caches", "Fit learned caches — predictor, selector and an exit threshold calibrated to a target precision — on layers of a base model.",
            [baseModel, predictorsModel], layers, architectures, selector, precision, trainRows, holdoutRows, epochs, patience, selectorEpochs, lr, noStandardize, dumpDir, seed, output);
        command.Validators.Add(r =>
        {
            if ((r.GetValue(baseModel) is null) == (r.GetValue(predictorsModel) is null))
                r.AddError("Give exactly one of --base-model (train predictors) and --predictors-model (reuse trained predictors).");
        });
        command.SetRun(arguments.Runtime, (result, cancellation) =>
        {
            var settings = new FitCachesSettings
            {
                BaseModel = result.GetValue(baseModel),
                PredictorsModel = result.GetValue(predictorsModel),
                Dataset = arguments.Dataset.Read(result),
                Layers = result.GetValue(layers) is { } l ? LayerList.Parse(l) : null,
                Architectures = result.GetValue(architectures) is { } a ? ArchitectureList.Parse(a) : null,
                TrainRows = result.GetValue(trainRows),
                HoldoutRows = result.GetValue(holdoutRows),
                Predictor = new()
                {
                    Epochs = result.GetValue(epochs),
                    Patience = result.GetValue(patience),
                    LearningRate = result.GetValue(lr),
                    StandardizeInputs = !result.GetValue(noStandardize),
                },
                Selectors = new()
                {
                    Architecture = SelectorArchitecture.Parse(result.GetValue(selector)!),
                    TargetPrecision = result.GetValue(precision),
                    Epochs = result.GetValue(selectorEpochs),
                },
                DumpDir = result.GetValue(dumpDir),
                Seed = result.GetValue(seed),
                Output = result.GetValue(output)!,
                Device = arguments.Device(result),
            };
            return new FitCachesRunner(AnsiConsole.Console).Run(settings, cancellation);
        });
        return command;
    }
}
