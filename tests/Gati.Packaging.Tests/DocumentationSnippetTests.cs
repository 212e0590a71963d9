using Gati.Packaging.Tests.Infrastructure;

namespace Gati.Packaging.Tests;

/// <summary>
/// Every C# block of README.md, docs/ and the package READMEs compiles against the library as built (a block that
/// stops compiling after an API change fails here, naming the file and line).
/// </summary>
public sealed class DocumentationSnippetTests
{
    public static TheoryData<string> Blocks()
    {
        var data = new TheoryData<string>();
        foreach (var block in AllBlocks()) data.Add(block.Id);
        return data;
    }

    [Theory]
    [MemberData(nameof(Blocks))]
    public void Block_Compiles(string id)
    {
        var block = AllBlocks().Single(b => b.Id == id);

        var errors = SnippetCompiler.Errors(block);

        Assert.True(errors.Count == 0, $"{id} does not compile:\n{string.Join('\n', errors)}\n\n{block.Code}");
    }

    [Fact]
    public void Blocks_AreFoundInReadmeDocsAndPackageReadmes()
    {
        var files = AllBlocks().Select(b => b.File).Distinct().ToArray();

        Assert.Contains("README.md", files);
        Assert.Contains(files, f => f.StartsWith("docs/", StringComparison.Ordinal));
        Assert.Contains(files, f => f.StartsWith("src/", StringComparison.Ordinal));
    }

    [Fact]
    public void Markers_AreKnownAndNameTheirVariables()
    {
        foreach (var block in AllBlocks().Where(b => b.Marker is not null))
            SnippetCompiler.FragmentParameters(block); // throws on an unknown marker
    }

    /// <summary>README.md, every markdown file under docs/, and the README of every project under src/ and samples/.</summary>
    private static IReadOnlyList<CSharpBlock> AllBlocks()
    {
        var root = Repository.Root;
        var files = new[] { "README.md" }
            .Concat(Directory.EnumerateFiles(Path.Combine(root, "docs"), "*.md", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(root, f)))
            .Concat(new[] { "src", "samples" }.SelectMany(folder =>
                Directory.EnumerateFiles(Path.Combine(root, folder), "README.md", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(root, f))))
            .Select(f => f.Replace(Path.DirectorySeparatorChar, '/'))
            .Where(f => !f.Contains("/bin/", StringComparison.Ordinal) && !f.Contains("/obj/", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
        return files.SelectMany(f => CSharpBlock.Read(root, f)).ToArray();
    }
}
