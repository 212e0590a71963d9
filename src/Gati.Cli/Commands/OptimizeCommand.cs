using System.CommandLine;
using System.Diagnostics;
using Gati.Cli.Infrastructure;
using Gati.MLNet;
using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using Spectre.Console;

namespace Gati.Cli.Commands;

/// <summary><c>gati optimize</c>: choose which candidate caches to keep.</summary>
internal static class OptimizeCommand
{
    public static Command Create()
    {
        var dataset = new DatasetArguments();
        var runtime = new RuntimeArguments();
        var model = new Option<string>("--model", "-m") { Description = "Model zip with candidate caches (gati fit-caches).", Required = true };
        var agreement = new Option<double>("--agreement-target") { Description = "Least agreement with the base model on held-out rows.", DefaultValueFactory = _ => 0.99 }.Share();
        var memory = new Option<double?>("--memory-budget-mb") { Description = "Most memory for the chosen caches' parameters, in MB (default: no limit)." }.Positive();
        var batchSize = new Option<int>("--batch-size") { Description = "Batch size to minimise latency for (timings are taken at 1 and at this size).", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var holdoutRows = new Option<long>("--holdout-rows") { Description = "Measure on the last N rows of the training split (held out from predictor training; use fit-caches' value).", DefaultValueFactory = _ => 5000 }.AtLeast(2L);
        var timingRuns = new Option<int>("--timing-runs") { Description = "Timed repetitions per model part.", DefaultValueFactory = _ => 200 }.AtLeast(1);
        var output = new Option<string>("--output", "-o") { Description = "Model zip to write with the chosen caches only (plus the plan as <output>.plan.md).", Required = true };
        var command = new Command("optimize", "Choose the layers (and architecture per layer) whose caches minimise expected latency on this device under an agreement target and a memory budget; explain the choice.");
        command.Options.Add(model);
        dataset.AddTo(command);
        foreach (var option in new Option[] { agreement, memory, batchSize, holdoutRows, timingRuns, output }) command.Options.Add(option);
        runtime.AddTo(command);
        command.SetAction((result, _) => Task.FromResult(CommandErrors.Run(AnsiConsole.Console, () =>
        {
            runtime.Apply(result);
            return new OptimizeRunner(AnsiConsole.Console).Run(new OptimizeSettings(result.GetValue(model)!, dataset.Read(result), result.GetValue(agreement),
                result.GetValue(memory) is { } mb ? (long)(mb * 1048576) : null, result.GetValue(batchSize), result.GetValue(holdoutRows),
                result.GetValue(timingRuns), result.GetValue(output)!, result.GetValue(runtime.Device)!));
        })));
        return command;
    }
}

internal sealed record OptimizeSettings(string Model, DatasetSpec Dataset, double AgreementTarget, long? MemoryBudgetBytes, int BatchSize, long HoldoutRows,
    int TimingRuns, string Output, string Device);

/// <summary>Runs <c>gati optimize</c>.</summary>
internal sealed class OptimizeRunner(IAnsiConsole console)
{
    public int Run(OptimizeSettings settings)
    {
        var clock = Stopwatch.StartNew();
        var context = new MLContext(0);
        DeviceOptions.ConfigureContext(context, settings.Device);
        var loaded = context.Gati().LoadModel(settings.Model, out var schema);
        try
        {
            var candidates = LoadedModel.Components(loaded).OfType<LearnedCachesTransformer>().LastOrDefault()
                ?? throw new InvalidOperationException($"{settings.Model} holds no learned caches: fit them with gati fit-caches.");
            var baseModel = LoadedModel.BaseModel(loaded, settings.Model);
            var heldOut = HeldOutSplit.Create(context, settings.Dataset, settings.HoldoutRows).HeldOut;
            console.MarkupLineInterpolated($"Measuring {candidates.Caches.Count} candidate caches on {settings.HoldoutRows} held-out rows on {candidates.Device} (batch 1 and {settings.BatchSize})...");
            var measurements = CacheMeasurements.Measure(candidates, heldOut, settings.BatchSize, settings.TimingRuns);
            var plan = CacheOptimizer.Choose(measurements, new CacheConstraints(settings.AgreementTarget, settings.MemoryBudgetBytes, settings.BatchSize));
            console.WriteLine(plan.Explanation);
            using var chosen = CacheOptimizer.Apply(plan, candidates);
            context.Gati().SaveModel(new TransformerChain<ITransformer>(baseModel, chosen), schema, settings.Output);
            AtomicFile.WriteAllText(settings.Output + ".plan.md", $"# Cache plan for {Path.GetFileName(settings.Model)}\n\n{plan.Explanation}\nCommand:\n\n```\n{Environment.CommandLine}\n```\n");
            console.MarkupLineInterpolated($"Saved the base model with {plan.Chosen.Count} chosen caches to [bold]{settings.Output}[/] (plan: {settings.Output}.plan.md) in {clock.Elapsed.TotalSeconds:F0} s.");
            return 0;
        }
        finally
        {
            LoadedModel.Dispose(loaded);
        }
    }
}
