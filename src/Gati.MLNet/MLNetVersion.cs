using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace Gati.MLNet;

/// <summary>
/// Checks that the ML.NET loaded at run time is the minor version Gati.MLNet was compiled against. Gati.MLNet uses
/// ML.NET's internal model-saving API (docs/mlnet-internals.md), which may change in any minor release; the package
/// asks for Microsoft.ML [6.0.0, 6.1), but an app can still force another version (NuGet only warns, NU1608). Then the
/// first use of Gati fails with this explanation instead of a MissingMethodException somewhere in a model load.
/// </summary>
internal static class MLNetVersion
{
    /// <summary>The assembly metadata key holding the Microsoft.ML version we compiled against (set by the build).</summary>
    internal const string CompiledAgainstKey = "GatiCompiledAgainstMicrosoftML";

    private static readonly Lazy<string?> Problem = new(() =>
    {
        if (CompiledAgainst is not { } compiled) return null;
        foreach (var assembly in new[] { typeof(MLContext).Assembly, typeof(IHostEnvironment).Assembly })
        {
            var loaded = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
            if (Describe(loaded, compiled, assembly.GetName().Name ?? "ML.NET") is { } problem) return problem;
        }
        return null;
    });

    /// <summary>The Microsoft.ML version this build of Gati.MLNet was compiled against.</summary>
    internal static string? CompiledAgainst =>
        typeof(MLNetVersion).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == CompiledAgainstKey)?.Value;

    /// <summary>Throws when the loaded ML.NET is not the minor version Gati.MLNet was compiled against.</summary>
    /// <exception cref="InvalidOperationException">Another ML.NET minor version is loaded.</exception>
    public static void EnsureSupported()
    {
        if (Problem.Value is { } problem) throw new InvalidOperationException(problem);
    }

    /// <summary>Null when <paramref name="loaded"/> (an informational version such as "6.0.0+sha") matches
    /// <paramref name="compiled"/>'s major.minor; else what is wrong and what to do.</summary>
    internal static string? Describe(string? loaded, string compiled, string assemblyName)
    {
        var expected = Parse(compiled) ?? throw new ArgumentException($"'{compiled}' is not a version.", nameof(compiled));
        var actual = Parse(loaded);
        if (actual is not null && actual.Major == expected.Major && actual.Minor == expected.Minor) return null;
        var ours = typeof(MLNetVersion).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "?";
        return $"Gati.MLNet {ours} works with ML.NET {expected.Major}.{expected.Minor}.x only (it was compiled against ML.NET {compiled} and uses " +
               $"its internal model-saving API), but this process loaded {assemblyName} {loaded ?? "of an unknown version"}. " +
               $"Reference Microsoft.ML {compiled} (or another {expected.Major}.{expected.Minor}.x release) in your project, " +
               "or use a Gati.MLNet release built for the ML.NET you need.";
    }

    private static Version? Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        var core = text.Split('+', '-')[0];
        return Version.TryParse(core, out var version) ? version : null;
    }
}
