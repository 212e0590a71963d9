namespace Gati.Cli.Commands;

/// <summary><c>gati train-base</c>: train a CIFAR-style ResNet base model and save it as an ML.NET model zip.</summary>
internal static class TrainBaseCommand
{
    public static Command Create()
    {
        var arguments = new CommandArguments();
        var arch = new Option<string>("--arch") { Description = "Architecture: resnet18, resnet34, resnet50, resnet101 or resnet152.", DefaultValueFactory = _ => "resnet18" }.ParsedBy(v => ResNetSpec.Parse(v));
        var width = new Option<int>("--width") { Description = "Base width (channels of the first stage): 64 is the paper's; 8-16 make CPU training practical.", DefaultValueFactory = _ => 64 }.Between(1, 1024);
        var epochs = new Option<int>("--epochs") { Description = "Passes over the training data.", DefaultValueFactory = _ => 30 }.AtLeast(1);
        var lr = new Option<double>("--lr") { Description = "Initial learning rate (cosine-annealed to 0 over the run).", DefaultValueFactory = _ => 0.1 }.Positive();
        var batchSize = new Option<int>("--batch-size") { Description = "Images per SGD step.", DefaultValueFactory = _ => 128 }.AtLeast(1);
        var momentum = new Option<double>("--momentum") { Description = "SGD momentum.", DefaultValueFactory = _ => 0.9 }.Require(v => v is >= 0 and < 1, "must be at least 0 and below 1");
        var weightDecay = new Option<double>("--weight-decay") { Description = "L2 weight decay.", DefaultValueFactory = _ => 5e-4 }.AtLeast(0.0);
        var cropPadding = new Option<int>("--crop-padding") { Description = "Padding in pixels for random-crop augmentation (0 disables).", DefaultValueFactory = _ => 4 }.AtLeast(0);
        var noFlip = new Option<bool>("--no-flip") { Description = "Disable random horizontal flips." };
        var seed = new Option<int>("--seed") { Description = "Random seed (initialisation, shuffling, augmentation).", DefaultValueFactory = _ => 0 };
        var trainRows = new Option<long?>("--train-rows") { Description = "Train on the first N training rows only (quick runs)." }.AtLeast(1L);
        var testRows = new Option<long?>("--test-rows") { Description = "Evaluate on the first N test rows only." }.AtLeast(1L);
        var validate = new Option<bool>("--validate-each-epoch") { Description = "Report test-split accuracy after every epoch (costs one test pass per epoch)." };
        var output = new Option<string>("--output", "-o") { Description = "Where to write the trained model (an ML.NET model zip; written atomically).", Required = true };
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Checkpoint file written after every epoch (default: <output>.ckpt)." };
        var resume = new Option<bool>("--resume") { Description = "Continue from the checkpoint if it exists (e.g. after the process was killed)." };
        var epochsThisRun = new Option<int?>("--epochs-this-run") { Description = "Stop after this many epochs and save the model as it stands; --resume later continues the schedule. 0 with --resume saves the checkpoint's model without training." }.AtLeast(0);

        var command = arguments.CreateCommand("train-base", "Train a CIFAR-style ResNet base model on a dataset and save it as an ML.NET model zip; evaluates it on the test split at the end.",
            [], arch, width, epochs, lr, batchSize, momentum, weightDecay, cropPadding, noFlip, seed, trainRows, testRows, validate, output, checkpoint, resume, epochsThisRun);

        command.SetRun(arguments.Runtime, (result, cancellation) =>
        {
            var settings = new TrainBaseSettings
            {
                Dataset = arguments.Dataset.Read(result),
                Recipe = new()
                {
                    Architecture = ResNetSpec.Parse(result.GetValue(arch)!),
                    BaseWidth = result.GetValue(width),
                    Epochs = result.GetValue(epochs),
                    LearningRate = result.GetValue(lr),
                    BatchSize = result.GetValue(batchSize),
                    Momentum = result.GetValue(momentum),
                    WeightDecay = result.GetValue(weightDecay),
                    RandomCropPadding = result.GetValue(cropPadding),
                    HorizontalFlip = !result.GetValue(noFlip),
                    Seed = result.GetValue(seed),
                    Resume = result.GetValue(resume),
                    EpochsThisRun = result.GetValue(epochsThisRun),
                    Device = arguments.Device(result),
                },
                TrainRows = result.GetValue(trainRows),
                TestRows = result.GetValue(testRows),
                ValidateEachEpoch = result.GetValue(validate),
                Output = result.GetValue(output)!,
                Checkpoint = result.GetValue(checkpoint),
            };
            return new TrainBaseRunner(AnsiConsole.Console).Run(settings, cancellation);
        });
        return command;
    }
}
