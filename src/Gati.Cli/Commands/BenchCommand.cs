namespace Gati.Cli.Commands;

/// <summary><c>gati bench</c>: reproducible speed measurements (results go to docs/benchmarks.md).</summary>
internal static class BenchCommand
{
    public static Command Create() =>
        CommandActions.Group("bench", "Measure speed: base-model training and inference throughput, and the ML.NET transformer path against a plain TorchSharp loop.",
            CreateBase(), CreateEngine(), CreateWorkload(), CreatePhaseCeiling());

    private static Command CreateEngine()
    {
        var arguments = new CommandArguments();
        var model = new Option<string>("--model", "-m") { Description = "Model zip with chosen caches (gati optimize).", Required = true };
        var batchSizes = new Option<string>("--batch-sizes") { Description = "Batch sizes, comma-separated.", DefaultValueFactory = _ => "1,64" }
            .ParsedBy(v => EvaluateEarlyExitCommand.ParseBatchSizes(v));
        var rows = new Option<long?>("--rows") { Description = "Test rows to time (default: all)." }.AtLeast(1L);
        var memoryPredictions = new Option<int>("--memory-predictions") { Description = "Batch-1 predictions of the native-memory check (0 skips it).", DefaultValueFactory = _ => 100_000 }.AtLeast(0);
        var output = new Option<string?>("--output", "-o") { Description = "Also write the results as markdown to this file." };
        var rounds = new Option<int>("--rounds") { Description = "Rounds per batch size; each round times every engine on the same slice of images.", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var imagesPerRound = new Option<int>("--images-per-round") { Description = "Images each engine runs per round (rounded to whole batches).", DefaultValueFactory = _ => 1000 }.AtLeast(1);
        var serving = new ServingArguments(defaultBackend: "both", allowBoth: true);
        var command = arguments.CreateCommand("engine", "The full model and early exit on each backend (TorchSharp, ONNX Runtime) side by side: answers on the test split, latency per call (mean/p50/p99) at several batch sizes, and resident memory over many predictions.",
            [model], batchSizes, rows, memoryPredictions, output, rounds, imagesPerRound);
        serving.AddTo(command);
        command.SetRun(arguments.Runtime, (result, _) =>
        {
            return new EngineBenchmark(AnsiConsole.Console).Run(new EngineBenchmarkSettings(result.GetValue(model)!, arguments.Dataset.Read(result),
                EvaluateEarlyExitCommand.ParseBatchSizes(result.GetValue(batchSizes)!), result.GetValue(rows), result.GetValue(memoryPredictions),
                arguments.Device(result), result.GetValue(output), serving.Read(result, arguments.Device(result)),
                result.GetValue(rounds), result.GetValue(imagesPerRound)));
        });
        return command;
    }

    private static Command CreateWorkload()
    {
        var dataset = new DatasetArguments();
        var model = new Option<string>("--model", "-m") { Description = "Model zip with chosen caches (gati optimize).", Required = true };
        var streams = new Option<string>("--stream")
        {
            Description = "phased (temporal locality), uniform, both (phased and uniform), drift (the second half through a changed camera), or all.",
            DefaultValueFactory = _ => "both",
        };
        streams.Require(s => s is "phased" or "uniform" or "both" or "drift" or "all", "must be phased, uniform, both, drift or all");
        var shape = new StreamArguments();
        var requests = new Option<int>("--requests") { Description = "Requests per stream.", DefaultValueFactory = _ => 40000 }.AtLeast(100);
        var phaseLength = new Option<int>("--phase-length") { Description = "Requests per phase of the phased stream.", DefaultValueFactory = _ => 10000 }.AtLeast(10);
        var seed = new Option<int>("--seed") { Description = "Seed of the streams, the sampling and fine-tuning.", DefaultValueFactory = _ => 0 };
        var sample = new Option<double>("--sample-fraction") { Description = "Share of requests sampled as shadow rows.", DefaultValueFactory = _ => 0.2 }.Share();
        var window = new Option<double>("--window-mb") { Description = "Memory of the shadow window, MB.", DefaultValueFactory = _ => 256 }.Positive();
        var target = new Option<double>("--agreement-target") { Description = "Agreement with the base model to keep.", DefaultValueFactory = _ => 0.99 }.Share();
        var confidence = new Option<double>("--confidence") { Description = "One-sided confidence of live bounds and calibrated thresholds.", DefaultValueFactory = _ => 0.95 }
            .Require(v => v is > 0.5 and < 1, "must be between 0.5 and 1");
        var reactOn = new Option<string>("--react-on")
        {
            Description = "When live agreement makes the caches react: drop (upper bound below the target, or the estimate below it after the lower bound had shown it kept), lower (lower bound below the target) or upper (upper bound below it).",
            DefaultValueFactory = _ => "drop",
        };
        reactOn.Require(v => v is "drop" or "lower" or "upper", "must be drop, lower or upper");
        var noUpdates = new Option<bool>("--no-updates") { Description = "Online caches only watch and react (no background updater): what shadowing and reactions cost alone." };
        var copyActivations = new Option<string>("--copy-activations")
        {
            Description = "Where kept rows' activations come from at batch 1: auto (timed: copied unless the single graph's tapped form costs more than 25 % more than its plain form), on (the request copies them from the tapped graph) or off (the worker recomputes them after the single graph).",
            DefaultValueFactory = _ => "auto",
        };
        copyActivations.Require(v => v is "auto" or "on" or "off", "must be auto, on or off");
        var stepAside = new Option<bool>("--step-aside") { Description = "Background work waits while a request is in flight (at most 50 ms at a time), beside running below serving's priority." };
        var noExitMix = new Option<bool>("--no-exit-mix-watch") { Description = "Online caches judge the live window alone, not also the requests since a change of where requests exit." };
        var every = new Option<int>("--update-every") { Description = "New labelled rows between update attempts.", DefaultValueFactory = _ => 600 }.AtLeast(10);
        var validation = new Option<int>("--validation-rows") { Description = "Fresh sampled rows a candidate is validated on.", DefaultValueFactory = _ => 250 }.AtLeast(10);
        var fullRuns = new Option<double>("--full-run-fraction") { Description = "Share of the requests that ran the whole network kept as training rows.", DefaultValueFactory = _ => 1 }
            .Require(v => v is >= 0 and <= 1, "must be in [0, 1]");
        var updateRows = new Option<int>("--update-rows") { Description = "Most recent labelled rows an update fine-tunes and calibrates on.", DefaultValueFactory = _ => 4000 }.AtLeast(200);
        var priorRows = new Option<int>("--class-prior-rows")
        {
            Description = "Newest sampled training rows each update fits its predictors' class-prior correction on (0: no correction).", DefaultValueFactory = _ => 150,
        }.AtLeast(0);
        var epochs = new Option<int>("--update-epochs") { Description = "Epochs of fine-tuning per update, from the serving weights.", DefaultValueFactory = _ => 3 }.AtLeast(1);
        var learningRate = new Option<double>("--update-learning-rate") { Description = "Learning rate of an update's fine-tuning.", DefaultValueFactory = _ => 0.005 }.Positive();
        var budget = new Option<double>("--cpu-budget") { Description = "Share of one core the updater may use.", DefaultValueFactory = _ => 0.5 }.Share();
        var output = new Option<string?>("--output", "-o") { Description = "Also write the results as markdown to this file." };
        var rate = new Option<double>("--rate") { Description = "Requests per second (arrivals at a fixed rate; the updater works in between).", DefaultValueFactory = _ => 500 }.Positive();
        var command = new Command("workload",
            "Replay request streams with and without temporal locality through static and through continuously updated caches: latency, exits, agreement on every request, updates.");
        command.Options.Add(model);
        dataset.AddTo(command);
        // Online caches shadow requests on ONNX Runtime on the CPU: its thread options, no backend choice.
        var serving = new ServingArguments();
        serving.AddTo(command, withBackend: false);
        shape.AddTo(command);
        command.AddOptions(streams, requests, phaseLength, seed, sample, window, target, confidence, reactOn, noUpdates, noExitMix, copyActivations, stepAside, every, validation, fullRuns, updateRows, priorRows, epochs, learningRate, budget, rate, output);
        command.SetRun((result, _) =>
        {
            var online = new Gati.MLNet.Online.OnlineCacheOptions
            {
                SampleFraction = result.GetValue(sample), WindowMegabytes = result.GetValue(window), AgreementTarget = result.GetValue(target),
                Confidence = result.GetValue(confidence), UpdateEveryRows = result.GetValue(every), ValidationRows = result.GetValue(validation),
                CpuBudget = result.GetValue(budget), Seed = result.GetValue(seed), FullRunFraction = result.GetValue(fullRuns), UpdateRows = result.GetValue(updateRows),
                ClassPriorRows = result.GetValue(priorRows), Epochs = result.GetValue(epochs), LearningRate = result.GetValue(learningRate),
                Updates = !result.GetValue(noUpdates), WatchExitMix = !result.GetValue(noExitMix),
                CopyActivationsOnRequest = result.GetValue(copyActivations) switch { "on" => true, "off" => false, _ => null },
                StepAsideForRequests = result.GetValue(stepAside),
                ReactOn = result.GetValue(reactOn) switch
                {
                    "upper" => Gati.MLNet.Online.ReactionTrigger.UpperBound,
                    "lower" => Gati.MLNet.Online.ReactionTrigger.LowerBound,
                    _ => Gati.MLNet.Online.ReactionTrigger.Drop,
                },
            };
            var stream = result.GetValue(streams)!;
            return new WorkloadBenchmark(AnsiConsole.Console).Run(new WorkloadBenchmarkSettings(result.GetValue(model)!, dataset.Read(result),
                stream switch { "both" => ["phased", "uniform"], "all" => ["phased", "uniform", "drift"], _ => [stream] }, result.GetValue(requests),
                result.GetValue(phaseLength), result.GetValue(shape.Popular), result.GetValue(shape.PopularShare), result.GetValue(seed), online, result.GetValue(output),
                result.GetValue(rate), serving.ReadOnnxRuntime(result, "cpu"), result.GetValue(shape.Rows), result.GetValue(shape.DriftContrast), result.GetValue(shape.DriftNoise)));
        });
        return command;
    }

    private static Command CreatePhaseCeiling()
    {
        var dataset = new DatasetArguments();
        var model = new Option<string>("--model", "-m") { Description = "Model zip with chosen caches (gati optimize).", Required = true };
        var stream = new Option<string>("--stream") { Description = "phased (popular classes per phase) or drift (the second half through a changed camera).", DefaultValueFactory = _ => "phased" };
        stream.Require(s => s is "phased" or "drift", "must be phased or drift");
        var shape = new StreamArguments();
        var requests = new Option<int>("--requests") { Description = "Requests of the stream (as gati bench workload).", DefaultValueFactory = _ => 8000 }.AtLeast(100);
        var phaseLength = new Option<int>("--phase-length") { Description = "Requests per phase.", DefaultValueFactory = _ => 2000 }.AtLeast(10);
        var seed = new Option<int>("--seed") { Description = "Seed of the stream, the training rows and fine-tuning.", DefaultValueFactory = _ => 0 };
        var perPhase = new Option<int>("--rows-per-phase") { Description = "Training-split rows each phase's candidate is made from (half calibrate).", DefaultValueFactory = _ => 3000 }.AtLeast(200);
        var skip = new Option<long>("--train-skip")
        {
            Description = "Leading rows of the training split left out: those the offline predictors were fitted on (fit-caches --train-rows; scripts/demo-pretrained.sh uses the first 10000; selectors, thresholds and the choice of caches used rows at the end of the split).",
            DefaultValueFactory = _ => 10000,
        }.AtLeast(0L);
        var pool = new Option<long>("--train-pool") { Description = "Training-split rows (after the skipped ones) the phases' rows are drawn from.", DefaultValueFactory = _ => 6000 }.AtLeast(100L);
        var target = new Option<double>("--agreement-target") { Description = "Agreement with the base model the candidates are calibrated to.", DefaultValueFactory = _ => 0.99 }.Share();
        var confidence = new Option<double>("--confidence") { Description = "One-sided confidence of the calibrated thresholds.", DefaultValueFactory = _ => 0.95 }
            .Require(v => v is > 0.5 and < 1, "must be between 0.5 and 1");
        var priorRows = new Option<int>("--class-prior-rows") { Description = "Newest sampled training rows the class-prior correction is fitted on (0: none).", DefaultValueFactory = _ => 150 }.AtLeast(0);
        var epochs = new Option<int>("--update-epochs") { Description = "Epochs of fine-tuning, from the serving weights.", DefaultValueFactory = _ => 3 }.AtLeast(1);
        var learningRate = new Option<double>("--update-learning-rate") { Description = "Learning rate of fine-tuning.", DefaultValueFactory = _ => 0.005 }.Positive();
        var output = new Option<string?>("--output", "-o") { Description = "Also write the results as markdown to this file." };
        var command = new Command("phase-ceiling",
            "What an update could buy on each phase of a workload stream at most: candidates made by the updater's recipe from many rows drawn as each phase draws its requests, against the static caches and their thresholds recalibrated alone, served in simulation.");
        command.Options.Add(model);
        dataset.AddTo(command);
        var serving = new ServingArguments();
        serving.AddTo(command, withBackend: false);
        shape.AddTo(command);
        command.AddOptions(stream, requests, phaseLength, seed, perPhase, skip, pool, target, confidence, priorRows,
            epochs, learningRate, output);
        command.SetRun((result, _) =>
        {
            var update = new Gati.MLNet.Online.OnlineCacheOptions
            {
                AgreementTarget = result.GetValue(target), Confidence = result.GetValue(confidence), ClassPriorRows = result.GetValue(priorRows),
                Epochs = result.GetValue(epochs), LearningRate = result.GetValue(learningRate), Seed = result.GetValue(seed), CpuBudget = 1,
            };
            return new PhaseCeilingBenchmark(AnsiConsole.Console).Run(new PhaseCeilingSettings(result.GetValue(model)!, dataset.Read(result), result.GetValue(stream)!,
                result.GetValue(shape.Rows), result.GetValue(requests), result.GetValue(phaseLength), result.GetValue(shape.Popular), result.GetValue(shape.PopularShare), result.GetValue(seed),
                result.GetValue(perPhase), result.GetValue(skip), result.GetValue(pool), update, serving.ReadOnnxRuntime(result, "cpu"), result.GetValue(output),
                result.GetValue(shape.DriftContrast), result.GetValue(shape.DriftNoise)));
        });
        return command;
    }

    private static Command CreateBase()
    {
        var runtime = new RuntimeArguments();
        var widths = new Option<int[]>("--widths") { Description = "Base widths of ResNet-18 to measure.", DefaultValueFactory = _ => [16, 64], AllowMultipleArgumentsPerToken = true }
            .Require(v => v.Length > 0 && v.All(w => w is >= 1 and <= 1024), "must be one or more widths between 1 and 1024");
        var trainSteps = new Option<int>("--train-steps") { Description = "Timed SGD steps (batch 128) per width, after one warm-up step.", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var repeats = new Option<int>("--repeats") { Description = "Timed repetitions of each inference measurement (median reported).", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var rows = new Option<int>("--rows") { Description = "Fashion-MNIST test rows for the transformer-vs-loop comparison.", DefaultValueFactory = _ => 10000 }.AtLeast(1);
        var dataDir = new Option<string?>("--data-dir") { Description = "Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)." };
        var output = new Option<string?>("--output", "-o") { Description = "Also write the results as markdown to this file." };
        var command = new Command("base", "ResNet-18 (1x28x28 Fashion-MNIST input) training images/s, inference images/s at batch 1 and 64, and ML.NET transformer vs plain TorchSharp throughput at batch 64.");
        command.AddOptions(widths, trainSteps, repeats, rows, dataDir, output);
        runtime.AddTo(command);
        command.SetRun(runtime, (result, _) =>
        {
            var settings = new BaseBenchmarkSettings(result.GetValue(widths)!, result.GetValue(trainSteps), result.GetValue(repeats),
                result.GetValue(rows), result.GetValue(dataDir), result.GetValue(runtime.Device)!, result.GetValue(output));
            return new BaseBenchmark(AnsiConsole.Console).Run(settings);
        });
        return command;
    }
}
