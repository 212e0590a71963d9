namespace Gati.Packaging.Tests.Infrastructure;

/// <summary>Where the repository and this test assembly's build live.</summary>
public static class Repository
{
    /// <summary>The folder holding Gati.MLNet.sln, found upwards from this test assembly.</summary>
    public static string Root { get; } = FindRoot();

    /// <summary>The configuration this test assembly was built in (bin/&lt;Configuration&gt;/&lt;tfm&gt;/).</summary>
    public static string Configuration => new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;

    /// <summary>The target framework folder name of this test assembly's build.</summary>
    public static string TargetFramework => new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Name;

    /// <summary>A path under the repository root, from '/'-separated parts.</summary>
    public static string PathOf(string relative) => Path.Combine(Root, relative.Replace('/', Path.DirectorySeparatorChar));

    /// <summary>The built dll of a project of the solution, in this test assembly's configuration.</summary>
    public static string BuiltAssembly(string projectFolder, string assemblyName)
    {
        var path = Path.Combine(PathOf(projectFolder), "bin", Configuration, TargetFramework, assemblyName + ".dll");
        if (!File.Exists(path)) throw new FileNotFoundException($"{assemblyName} is not built at {path} (build Gati.MLNet.sln first).", path);
        return path;
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Gati.MLNet.sln"))) return dir.FullName;
        throw new InvalidOperationException($"No Gati.MLNet.sln above {AppContext.BaseDirectory}.");
    }
}
