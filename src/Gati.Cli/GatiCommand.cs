using Gati.Cli.Commands;

namespace Gati.Cli;

/// <summary>The root <c>gati</c> command.</summary>
internal static class GatiCommand
{
    public static RootCommand Create()
    {
        var root = new RootCommand("Gati.MLNet: learned caches (early-exit networks) for ML.NET. Train a base ResNet or import a pretrained network, fit caches, and serve it faster.");
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(TrainBaseCommand.Create());
        root.Subcommands.Add(EvaluateCommand.Create());
        root.Subcommands.Add(TrainPredictorsCommand.Create());
        root.Subcommands.Add(ReportCommand.Create());
        root.Subcommands.Add(FitCachesCommand.Create());
        root.Subcommands.Add(OptimizeCommand.Create());
        root.Subcommands.Add(EvaluateEarlyExitCommand.Create());
        root.Subcommands.Add(PredictCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(ExportCommand.Create());
        root.Subcommands.Add(ImportCommand.Create());
        root.Subcommands.Add(ImagesCommand.Create());
        return root;
    }
}
