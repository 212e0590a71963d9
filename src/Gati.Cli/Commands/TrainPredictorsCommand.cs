namespace Gati.Cli.Commands;

/// <summary><c>gati train-predictors</c>: predictors for a set of layers x architectures of a trained base model.</summary>
internal static class TrainPredictorsCommand
{
    public static Command Create()
    {
        var arguments = new CommandArguments();
        var baseModel = new Option<string>("--base-model", "-b") { Description = "The base model zip written by gati train-base or gati import.", Required = true };
        var layers = new Option<string>("--layers") { Description = "Layers (residual block outputs) to attach predictors to, e.g. 1-8 or 2,4,6.", DefaultValueFactory = _ => "1-8" }.ParsedBy(v => LayerList.Parse(v));
        var architectures = new Option<string>("--architectures") { Description = "Predictor architectures, comma-separated: fc, pool, conv (or with parameters, e.g. fc:512,conv:5:2).", DefaultValueFactory = _ => "fc,pool,conv" }.ParsedBy(ParseArchitectureNames);
        var fcHidden = new Option<int>("--fc-hidden") { Description = "Hidden units of fc predictors (the seed's FC(1024)).", DefaultValueFactory = _ => 1024 }.AtLeast(1);
        var poolSize = new Option<int>("--pool-size") { Description = "Length after adaptive average pooling of pool predictors (the seed's Pool(4096)).", DefaultValueFactory = _ => 4096 }.AtLeast(1);
        var poolHidden = new Option<int>("--pool-hidden") { Description = "Hidden units of pool predictors.", DefaultValueFactory = _ => 1024 }.AtLeast(1);
        var convKernel = new Option<int>("--conv-kernel") { Description = "Kernel size of conv predictors (the seed's Conv(3, 1)).", DefaultValueFactory = _ => 3 }.AtLeast(1);
        var convStride = new Option<int>("--conv-stride") { Description = "Stride of conv predictors.", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var features = new Option<string>("--features") { Description = "Where training features come from: dump (compute once, store on disk), stream (recompute with the base model every epoch) or auto (dump when it fits --max-dump-gb and the free disk space).", DefaultValueFactory = _ => "auto" };
        features.AcceptOnlyFromAmong("auto", "dump", "stream");
        var dumpDir = new Option<string?>("--dump-dir") { Description = "Folder for the feature dump (default: <output>.features); an interrupted dump resumes." };
        var maxDump = new Option<double>("--max-dump-gb") { Description = "Largest dump that auto mode writes, in GB.", DefaultValueFactory = _ => 20 }.AtLeast(0.0);
        var float16 = new Option<bool>("--float16") { Description = "Store dumped features as float16 (half the disk)." };
        var trainRows = new Option<long?>("--train-rows") { Description = "Train on the first N rows of the training split (default: all rows before the held-out ones)." }.AtLeast(1L);
        var holdoutRows = new Option<long>("--holdout-rows") { Description = "The last N rows of the training split are held out: they pick each predictor's best epoch (and later train selectors).", DefaultValueFactory = _ => 5000 }.AtLeast(2L);
        var augmented = new Option<int>("--augmented-copies")
        {
            Description = "Distil also from N augmented copies of the training images (random crop with 4 pixels of padding and a random flip, as train-base augments; the base model labels each): the training rows become (N + 1) x --train-rows.",
            DefaultValueFactory = _ => 0,
        }.AtLeast(0);
        var epochs = new Option<int>("--epochs") { Description = "Maximum epochs.", DefaultValueFactory = _ => 100 }.AtLeast(1);
        var patience = new Option<int>("--patience") { Description = "Stop a predictor after this many epochs without held-out improvement.", DefaultValueFactory = _ => 10 }.AtLeast(1);
        var batchSize = new Option<int>("--batch-size") { Description = "Rows per SGD step.", DefaultValueFactory = _ => 64 }.AtLeast(1);
        var lr = new Option<double>("--lr") { Description = "Initial learning rate (halved every --lr-halving epochs).", DefaultValueFactory = _ => 0.05 }.Positive();
        var stepBound = new Option<double>("--input-step-bound")
        {
            Description = "Bound on lr x the features' mean squared norm for the layer that reads them (FC predictors): above it that layer's rate is scaled down, so wide early layers do not diverge. 0 turns it off (the reference's single rate).",
            DefaultValueFactory = _ => PredictorTrainingOptions.DefaultInputStepBound,
        }.AtLeast(0.0);
        var noHeadStart = new Option<bool>("--no-head-start")
        {
            Description = "Start every predictor from random weights. By default FC and Pool predictors on the base model's last stage start as its head (channel averages into its linear layer) and keep that start unless an epoch beats it on the held-out rows.",
        };
        var noStandardize = new Option<bool>("--no-standardize")
        {
            Description = "Train predictors on the features as they are. By default each predictor trains on features standardised per cut point (mean and spread of the first 256 training rows), folded into its first layer afterwards.",
        };
        var halving = new Option<int>("--lr-halving") { Description = "Epochs between learning-rate halvings.", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var alpha = new Option<double>("--alpha") { Description = "Weight of the distillation (KL) term; 1 - alpha weighs cross-entropy with the base model's label.", DefaultValueFactory = _ => 0.5 }.Between(0.0, 1.0);
        var temperature = new Option<double>("--temperature") { Description = "Distillation temperature.", DefaultValueFactory = _ => 6 }.Positive();
        var seed = new Option<int>("--seed") { Description = "Random seed.", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--output", "-o") { Description = "Model zip to write: the base model, the feature extractor and every predictor, in one ML.NET chain.", Required = true };
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Checkpoint written after every epoch (default: <output>.ckpt)." };
        var resume = new Option<bool>("--resume") { Description = "Continue from the checkpoint (and the dump) if present." };

        var command = arguments.CreateCommand("train-predictors", "Train predictors (FC, Pool, Conv) on hidden layers of a base model by distillation, and save base + predictors as one model zip.",
            [baseModel], layers, architectures, fcHidden, poolSize, poolHidden, convKernel, convStride, features, dumpDir, maxDump, float16, trainRows, holdoutRows, augmented, epochs, patience, batchSize, lr, stepBound, noHeadStart, noStandardize, halving, alpha, temperature, seed, output, checkpoint, resume);

        command.SetRun(arguments.Runtime, (result, cancellation) =>
        {
            var architectureList = ArchitectureList.Names(result.GetValue(architectures)!)
                .Select(name => name.ToLowerInvariant() switch
                {
                    "fc" => PredictorArchitecture.FC(result.GetValue(fcHidden)),
                    "pool" => PredictorArchitecture.Pool(result.GetValue(poolSize), result.GetValue(poolHidden)),
                    "conv" => PredictorArchitecture.Conv(result.GetValue(convKernel), result.GetValue(convStride)),
                    _ => PredictorArchitecture.Parse(name),
                }).ToArray();
            var settings = new TrainPredictorsSettings
            {
                BaseModel = result.GetValue(baseModel)!,
                Dataset = arguments.Dataset.Read(result),
                Layers = LayerList.Parse(result.GetValue(layers)!),
                Architectures = architectureList,
                Features = result.GetValue(features)!,
                DumpDir = result.GetValue(dumpDir),
                MaxDumpBytes = (long)(result.GetValue(maxDump) * 1e9),
                Float16 = result.GetValue(float16),
                TrainRows = result.GetValue(trainRows),
                HoldoutRows = result.GetValue(holdoutRows),
                AugmentedCopies = result.GetValue(augmented),
                Recipe = new()
                {
                    Epochs = result.GetValue(epochs),
                    Patience = result.GetValue(patience),
                    BatchSize = result.GetValue(batchSize),
                    LearningRate = result.GetValue(lr),
                    InputStepBound = result.GetValue(stepBound) is > 0 and var bound ? bound : null,
                    InitializeFromBaseHead = !result.GetValue(noHeadStart),
                    StandardizeInputs = !result.GetValue(noStandardize),
                    LearningRateHalvingEpochs = result.GetValue(halving),
                    Alpha = result.GetValue(alpha),
                    Temperature = result.GetValue(temperature),
                },
                Seed = result.GetValue(seed),
                Output = result.GetValue(output)!,
                Checkpoint = result.GetValue(checkpoint),
                Resume = result.GetValue(resume),
                Device = arguments.Device(result),
            };
            return new TrainPredictorsRunner(AnsiConsole.Console).Run(settings, cancellation);
        });
        return command;
    }

    /// <summary>Plain names take their parameters from --fc-hidden and the like (validated there); others must parse.</summary>
    private static void ParseArchitectureNames(string text)
    {
        var names = ArchitectureList.Names(text);
        if (names.Length == 0) throw new ArgumentException("Name at least one predictor architecture.");
        foreach (var name in names)
            if (name.ToLowerInvariant() is not ("fc" or "pool" or "conv")) PredictorArchitecture.Parse(name);
    }
}
