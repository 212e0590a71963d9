namespace Gati.Packaging.Tests.Infrastructure;

/// <summary>The consumer app (tests/Gati.Packaging.Tests/ConsumerApp/Program.cs), created and built from the packages.</summary>
/// <param name="Folder">The app's project folder.</param>
/// <param name="ModelFolder">Where its "train" command saves early-exit.zip and its answers.</param>
/// <param name="Build">The output of `dotnet build`.</param>
public sealed record ConsumerApp(string Folder, string ModelFolder, ChildProcessResult Build)
{
    /// <summary>The app's project and assembly name.</summary>
    public const string Name = "GatiConsumer";

    /// <summary>Its build output folder.</summary>
    public string OutputFolder => Path.Combine(Folder, "bin", "Release", "net10.0");

    /// <summary>The early-exit model that "train" saves.</summary>
    public string ModelPath => Path.Combine(ModelFolder, "early-exit.zip");

    /// <summary>Runs the app in a new process: <c>dotnet GatiConsumer.dll COMMAND MODELFOLDER</c>.</summary>
    public ChildProcessResult Run(TimeSpan timeout, string command) =>
        ChildProcess.Run(ChildProcess.Dotnet, [Path.Combine(OutputFolder, Name + ".dll"), command, ModelFolder], Folder, timeout,
            PackageWorkspace.Environment());
}
