using System.CommandLine;
using Gati.Cli.Infrastructure;
using Spectre.Console;

namespace Gati.Cli.Commands;

/// <summary><c>gati bench</c>: reproducible speed measurements (results go to docs/benchmarks.md).</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var command = new Command("bench", "Measure speed: base-model training and inference throughput, and the ML.NET transformer path against a plain TorchSharp loop.");
        command.Subcommands.Add(CreateBase());
        command.Subcommands.Add(CreateEngine());
        return command;
    }

    private static Command CreateEngine()
    {
        var runtime = new RuntimeArguments();
        var dataset = new DatasetArguments();
        var model = new Option<string>("--model", "-m") { Description = "Model zip with chosen caches (gati optimize).", Required = true };
        var batchSizes = new Option<string>("--batch-sizes") { Description = "Batch sizes, comma-separated.", DefaultValueFactory = _ => "1,64" }
            .ParsedBy(v => EvaluateEarlyExitCommand.ParseBatchSizes(v));
        var rows = new Option<long?>("--rows") { Description = "Test rows to time (default: all)." }.AtLeast(1L);
        var memoryPredictions = new Option<int>("--memory-predictions") { Description = "Batch-1 predictions of the native-memory check (0 skips it).", DefaultValueFactory = _ => 100_000 }.AtLeast(0);
        var output = new Option<string?>("--output", "-o") { Description = "Also write the results as markdown to this file." };
        var rounds = new Option<int>("--rounds") { Description = "Rounds per batch size; each round times every engine on the same slice of images.", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var imagesPerRound = new Option<int>("--images-per-round") { Description = "Images each engine runs per round (rounded to whole batches).", DefaultValueFactory = _ => 1000 }.AtLeast(1);
        var serving = new ServingArguments(defaultBackend: "both", allowBoth: true);
        var command = new Command("engine", "The full model and early exit on each backend (TorchSharp, ONNX Runtime) side by side: answers on the test split, latency per call (mean/p50/p99) at several batch sizes, and resident memory over many predictions.");
        command.Options.Add(model);
        dataset.AddTo(command);
        foreach (var option in new Option[] { batchSizes, rows, memoryPredictions, output, rounds, imagesPerRound }) command.Options.Add(option);
        runtime.AddTo(command);
        serving.AddTo(command);
        command.SetAction((result, _) => Task.FromResult(CommandErrors.Run(AnsiConsole.Console, () =>
        {
            runtime.Apply(result);
            return new EngineBenchmark(AnsiConsole.Console).Run(new EngineBenchmarkSettings(result.GetValue(model)!, dataset.Read(result),
                EvaluateEarlyExitCommand.ParseBatchSizes(result.GetValue(batchSizes)!), result.GetValue(rows), result.GetValue(memoryPredictions),
                result.GetValue(runtime.Device)!, result.GetValue(output), serving.Read(result, result.GetValue(runtime.Device)!),
                result.GetValue(rounds), result.GetValue(imagesPerRound)));
        })));
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
        foreach (var option in new Option[] { widths, trainSteps, repeats, rows, dataDir, output }) command.Options.Add(option);
        runtime.AddTo(command);
        command.SetAction((result, _) => Task.FromResult(CommandErrors.Run(AnsiConsole.Console, () =>
        {
            runtime.Apply(result);
            var settings = new BaseBenchmarkSettings(result.GetValue(widths)!, result.GetValue(trainSteps), result.GetValue(repeats),
                result.GetValue(rows), result.GetValue(dataDir), result.GetValue(runtime.Device)!, result.GetValue(output));
            return new BaseBenchmark(AnsiConsole.Console).Run(settings);
        })));
        return command;
    }
}
