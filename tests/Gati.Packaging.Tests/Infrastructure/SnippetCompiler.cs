using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace Gati.Packaging.Tests.Infrastructure;

/// <summary>
/// Compiles documentation code blocks with Roslyn against the assemblies this test runs with (Gati.MLNet,
/// Gati.Extensions.ML, ML.NET, ASP.NET Core, the .NET libraries), as a user's project would see them.
/// </summary>
/// <remarks>
/// A block without a marker is a whole program (top-level statements, its own using directives, plus the implicit
/// usings of a console project). A block marked <c>&lt;!-- snippet: fragment(Type name, ...) --&gt;</c> is a piece of
/// one: it becomes the body of an async method whose parameters are the variables the surrounding text assumes, with
/// <see cref="FragmentUsings"/> in scope.
/// </remarks>
public static class SnippetCompiler
{
    /// <summary>The implicit usings of an SDK-style console project (ImplicitUsings=enable).</summary>
    public static readonly IReadOnlyList<string> ImplicitUsings =
        ["System", "System.Collections.Generic", "System.IO", "System.Linq", "System.Net.Http", "System.Threading", "System.Threading.Tasks"];

    /// <summary>Namespaces in scope for fragments: the library's, ML.NET's and those of a web app's Program.cs.</summary>
    public static readonly IReadOnlyList<string> FragmentUsings =
    [
        "Gati.MLNet", "Gati.MLNet.Data", "Gati.MLNet.Inference", "Gati.MLNet.Models", "Gati.MLNet.Models.Predictors",
        "Gati.MLNet.Training", "Gati.MLNet.Transforms", "Gati.MLNet.Online", "Gati.Extensions.ML", "Microsoft.ML", "Microsoft.ML.Data",
        "Microsoft.AspNetCore.Builder", "Microsoft.AspNetCore.Http", "Microsoft.Extensions.Configuration",
        "Microsoft.Extensions.DependencyInjection",
    ];

    private const string FragmentPrefix = "fragment";

    private static readonly Lazy<MetadataReference[]> References = new(() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Where(path => path.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            .Select(path => (MetadataReference)MetadataReference.CreateFromFile(path))
            .ToArray());

    /// <summary>The compiler's errors for a block, as "file(line,column): error CSxxxx: message"; empty when it compiles.</summary>
    /// <exception cref="FormatException">The block's marker is not one this compiler knows.</exception>
    public static IReadOnlyList<string> Errors(CSharpBlock block)
    {
        var parse = new CSharpParseOptions(LanguageVersion.Latest);
        var globalUsings = CSharpSyntaxTree.ParseText(string.Concat(ImplicitUsings.Select(n => $"global using global::{n};\n")), parse);
        SyntaxTree code;
        OutputKind kind;
        if (block.Marker is null)
        {
            code = CSharpSyntaxTree.ParseText($"#line {block.Line} \"{block.File}\"\n{block.Code}", parse, path: block.File);
            kind = OutputKind.ConsoleApplication;
        }
        else
        {
            code = CSharpSyntaxTree.ParseText(WrapFragment(block, FragmentParameters(block)), parse, path: block.File);
            kind = OutputKind.DynamicallyLinkedLibrary;
        }

        var compilation = CSharpCompilation.Create(
            "DocumentationSnippet",
            [globalUsings, code],
            References.Value,
            new CSharpCompilationOptions(kind, nullableContextOptions: NullableContextOptions.Enable));
        return compilation.GetDiagnostics()
            .Where(d => d.Severity == DiagnosticSeverity.Error)
            .Select(d => d.ToString())
            .ToArray();
    }

    /// <summary>The parameter list of a fragment marker ("fragment" or "fragment(Type name, ...)").</summary>
    public static string FragmentParameters(CSharpBlock block)
    {
        var marker = block.Marker ?? throw new ArgumentException("The block has no marker.", nameof(block));
        if (marker == FragmentPrefix) return "";
        if (marker.StartsWith(FragmentPrefix + "(", StringComparison.Ordinal) && marker.EndsWith(')'))
            return marker[(FragmentPrefix.Length + 1)..^1];
        throw new FormatException($"{block.Id}: unknown snippet marker '{marker}' (known: 'fragment' or 'fragment(Type name, ...)').");
    }

    private static string WrapFragment(CSharpBlock block, string parameters) =>
        string.Concat(FragmentUsings.Select(n => $"using {n};\n")) +
        "internal static class DocumentationFragment\n{\n" +
        $"    internal static async Task Run({parameters})\n    {{\n" +
        $"#line {block.Line} \"{block.File}\"\n{block.Code}" +
        "#line default\n        await Task.CompletedTask;\n    }\n}\n";
}
