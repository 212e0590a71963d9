using System.Collections;
using System.Text.RegularExpressions;

namespace Gati.Packaging.Tests.Infrastructure;

/// <summary>
/// The packages as a user gets them, and a place outside the repository to use them: Gati.MLNet, Gati.Extensions.ML
/// and the gati tool packed from this checkout into a folder, under a fresh temporary folder with its own nuget.config.
/// A console app that references Gati.MLNet from there is created, built and trained once, on first use.
/// </summary>
/// <remarks>
/// Restore there sees the packed folder and nuget.org, and a global packages folder of its own, so the packages under test
/// never enter (or come from) the user's NuGet cache: a stale Gati.MLNet 1.0.0 there would otherwise be used instead of
/// the one just packed. Every other package is read from the user's cache, through a fallback folder that links to all of
/// it except our own packages, so that the check downloads nothing already on the machine (libtorch alone is ~600 MB).
/// </remarks>
public sealed class PackageWorkspace : IDisposable
{
    private static readonly string[] PackedProjects = ["src/Gati.MLNet", "src/Gati.Extensions.ML", "src/Gati.Cli"];
    private static readonly string[] OurPackageIds = ["gati", "gati.linux-x64", "gati.mlnet", "gati.extensions.ml"];
    private readonly Lazy<(ConsumerApp App, ChildProcessResult Train)> _app;

    public PackageWorkspace()
    {
        Root = Path.Combine(Path.GetTempPath(), "gati-consumer-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Root);
        RefuseInheritedSettings(Root);
        PackagesFolder = Directory.CreateDirectory(Path.Combine(Root, "packed")).FullName;

        var userCache = UserGlobalPackagesFolder();
        foreach (var project in PackedProjects)
        {
            // -nodeReuse:false and no compiler server: nothing may outlive the command holding its output pipes.
            RunDotnet(Repository.Root, TimeSpan.FromMinutes(10), "pack", Repository.PathOf(project), "-c", Repository.Configuration,
                "-o", PackagesFolder, "-nodeReuse:false", "-p:UseSharedCompilation=false").EnsureSuccess();
        }
        LibraryVersion = Directory.EnumerateFiles(PackagesFolder, "Gati.MLNet.*.nupkg")
            .Select(f => Regex.Match(Path.GetFileName(f), @"^Gati\.MLNet\.(\d+\.\d+\.\d+.*)\.nupkg$"))
            .Single(m => m.Success).Groups[1].Value;

        WriteNuGetConfig(userCache);
        _app = new(CreateBuildAndTrainApp, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>The temporary folder everything lives in (outside the repository).</summary>
    public string Root { get; }

    /// <summary>Where the packages were written.</summary>
    public string PackagesFolder { get; }

    /// <summary>The packed version of Gati.MLNet (and of the other packages).</summary>
    public string LibraryVersion { get; }

    /// <summary>The console app, built from the packages, and the output of its "train" run (which saved its model).</summary>
    public (ConsumerApp App, ChildProcessResult Train) TrainedApp => _app.Value;

    /// <summary>Environment for dotnet commands here: none of the test host's MSBuild settings, our own package folders.</summary>
    public static IReadOnlyDictionary<string, string?> Environment()
    {
        var environment = new Dictionary<string, string?>
        {
            ["NUGET_PACKAGES"] = null, // would override the workspace's globalPackagesFolder
            ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
            ["DOTNET_NOLOGO"] = "1",
            ["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1",
        };
        // The test host runs inside `dotnet test`, whose MSBuild variables would point child builds at its MSBuild.
        foreach (DictionaryEntry variable in System.Environment.GetEnvironmentVariables())
        {
            var name = (string)variable.Key;
            if (name.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)) environment[name] = null;
        }
        var hostPath = System.Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (hostPath is not null && System.Environment.GetEnvironmentVariable("DOTNET_ROOT") is null)
            environment["DOTNET_ROOT"] = Path.GetDirectoryName(hostPath); // for the gati tool's apphost
        return environment;
    }

    /// <summary>Runs a dotnet command in <paramref name="workingDirectory"/> with <see cref="Environment"/>.</summary>
    public static ChildProcessResult RunDotnet(string workingDirectory, TimeSpan timeout, params string[] arguments) =>
        ChildProcess.Run(ChildProcess.Dotnet, arguments, workingDirectory, timeout, Environment());

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a file still open on a slow runner is not a test failure.
        }
    }

    private (ConsumerApp App, ChildProcessResult Train) CreateBuildAndTrainApp()
    {
        var appFolder = Path.Combine(Root, "app");
        RunDotnet(Root, TimeSpan.FromMinutes(5), "new", "console", "-n", ConsumerApp.Name, "-o", appFolder, "--no-restore", "--no-update-check").EnsureSuccess();
        RunDotnet(appFolder, TimeSpan.FromMinutes(5), "add", "package", "Gati.MLNet", "--version", LibraryVersion).EnsureSuccess();
        // The tutorial's pretrained featurizer, for the app's "pretrained" command (the version the repository pins).
        RunDotnet(appFolder, TimeSpan.FromMinutes(5), "add", "package", "Microsoft.ML.DnnImageFeaturizer.ResNet18", "--version", "0.24.0").EnsureSuccess();
        File.Copy(Path.Combine(AppContext.BaseDirectory, "ConsumerApp", "Program.cs"), Path.Combine(appFolder, "Program.cs"), overwrite: true);
        var build = RunDotnet(appFolder, TimeSpan.FromMinutes(10), "build", "-c", "Release", "-nodeReuse:false", "-p:UseSharedCompilation=false").EnsureSuccess();

        var modelFolder = Directory.CreateDirectory(Path.Combine(Root, "model")).FullName;
        var app = new ConsumerApp(appFolder, modelFolder, build);
        return (app, app.Run(TimeSpan.FromMinutes(15), "train").EnsureSuccess());
    }

    private void WriteNuGetConfig(string userCache)
    {
        var fallback = Directory.CreateDirectory(Path.Combine(Root, "already-downloaded")).FullName;
        if (Directory.Exists(userCache))
        {
            foreach (var package in Directory.EnumerateDirectories(userCache))
            {
                var id = Path.GetFileName(package);
                if (!OurPackageIds.Contains(id, StringComparer.OrdinalIgnoreCase))
                    Directory.CreateSymbolicLink(Path.Combine(fallback, id), package);
            }
        }
        File.WriteAllText(Path.Combine(Root, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <config>
                <add key="globalPackagesFolder" value="{Path.Combine(Root, "nuget-packages")}" />
              </config>
              <packageSources>
                <clear />
                <add key="gati-packed" value="{PackagesFolder}" />
                <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
              </packageSources>
              <fallbackPackageFolders>
                <clear />
                <add key="already-downloaded" value="{fallback}" />
              </fallbackPackageFolders>
            </configuration>
            """);
    }

    private static string UserGlobalPackagesFolder()
    {
        // Asked of dotnet (with the caller's NUGET_PACKAGES, if any), from a folder that has no nuget.config of its own.
        var locals = ChildProcess.Run(ChildProcess.Dotnet, ["nuget", "locals", "global-packages", "--list"], Path.GetTempPath(), TimeSpan.FromMinutes(2))
            .EnsureSuccess();
        var line = locals.Lines.Single(l => l.StartsWith("global-packages:", StringComparison.Ordinal));
        return line["global-packages:".Length..].Trim();
    }

    /// <summary>The app must see nothing of the repository (or of anything else above it) but its own files.</summary>
    private static void RefuseInheritedSettings(string root)
    {
        string[] inherited = ["Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props", "global.json", "nuget.config", "NuGet.Config"];
        for (var dir = new DirectoryInfo(root).Parent; dir is not null; dir = dir.Parent)
        {
            var found = inherited.Select(name => Path.Combine(dir.FullName, name)).FirstOrDefault(File.Exists);
            if (found is not null)
                throw new InvalidOperationException($"{found} would apply to the consumer app in {root}: set TMPDIR to a folder without such files above it.");
        }
    }
}
