using System.IO.Compression;
using CsCheck;
using Gati.MLNet.Tests.Infrastructure;
using Microsoft.ML;
using Xunit.Abstractions;

namespace Gati.MLNet.Tests;

/// <summary>
/// Fuzz tests of <c>LoadModel</c> on corrupted copies of a real model zip holding every Gati.MLNet component: raw byte
/// damage (mostly caught by the zip's CRCs), and damage inside entries repacked with valid CRCs so that ML.NET's and our
/// readers see it. Every load succeeds or fails with an <see cref="InvalidDataException"/> starting with the path,
/// within an allocation bound. Fixed seeds; GATI_FUZZ_ITERATIONS runs more cases (docs/hardening.md).
/// </summary>
public sealed class ModelFuzzTests(UntrainedModelZip model, ITestOutputHelper output) : IClassFixture<UntrainedModelZip>
{
    /// <summary>Where the damage goes.</summary>
    public enum Target
    {
        WholeFile,
        EntryContent,
        DeleteEntry,
        DuplicateEntry,
        RenameEntry,
    }

    /// <summary>A damaged copy: where, which entry (index modulo the entry count) and how.</summary>
    public sealed record ModelCase(Target Target, int Entry, Mutations.Mutation Mutation, bool Stored)
    {
        public override string ToString() => $"{Target} entry {Entry} {Mutation}{(Stored ? " stored" : "")}";
    }

    internal static readonly Gen<ModelCase> Cases =
        from target in Gen.Frequency((2, (IGen<Target>)Gen.Const(Target.WholeFile)), (6, Gen.Const(Target.EntryContent)),
            (1, Gen.OneOf(Target.DeleteEntry, Target.DuplicateEntry, Target.RenameEntry)))
        from entry in Gen.Int[0, 1000]
        from mutation in Mutations.Any(noneOneIn: 20)
        from stored in Gen.Bool
        select new ModelCase(target, entry, mutation, stored);

    [Fact]
    public void LoadModel_CorruptedModelZips_LoadOrFailWithThePathAndBoundedMemory()
    {
        Fuzz.Run("model-zip", Cases, c =>
        {
            using var scratch = new TempDirectory();
            var path = scratch.File("model.zip");
            File.WriteAllBytes(path, Damage(model.Bytes, c));
            var size = new FileInfo(path).Length;
            string outcome = "loaded";
            var allocated = Fuzz.AllocatedBytes(() =>
            {
                try
                {
                    var loaded = new MLContext(0).Gati().LoadModel(path, out _);
                    foreach (var component in Components(loaded)) (component as IDisposable)?.Dispose();
                }
                catch (InvalidDataException ex)
                {
                    Assert.StartsWith(path + ": ", ex.Message);
                    outcome = "refused";
                }
            });
            // Loading the intact model allocates about 2 MB; the bound leaves room but not for anything sized by a corrupt field.
            Assert.True(allocated < (64L << 20) + 64 * size, $"allocated {allocated} bytes to load a {size}-byte zip");
            return outcome;
        }, ciIterations: 150, output);
    }

    private static IEnumerable<ITransformer> Components(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Components) : [model];

    /// <summary>The zip with the case's damage; entry-level damage is repacked with correct CRCs.</summary>
    internal static byte[] Damage(byte[] zip, ModelCase c)
    {
        if (c.Target == Target.WholeFile) return c.Mutation.Apply(zip);
        var entries = new List<(string Name, byte[] Content)>();
        using (var archive = new ZipArchive(new MemoryStream(zip), ZipArchiveMode.Read))
        {
            foreach (var entry in archive.Entries)
            {
                using var stream = entry.Open();
                using var copy = new MemoryStream();
                stream.CopyTo(copy);
                entries.Add((entry.FullName, copy.ToArray()));
            }
        }
        var index = c.Entry % entries.Count;
        var (name, content) = entries[index];
        switch (c.Target)
        {
            case Target.EntryContent:
                entries[index] = (name, c.Mutation.Apply(content));
                break;
            case Target.DeleteEntry:
                entries.RemoveAt(index);
                break;
            case Target.DuplicateEntry:
                entries.Add((name, c.Mutation.Apply(content)));
                break;
            case Target.RenameEntry:
                entries[index] = (name.Length > 1 ? name[..^1] + (char)('a' + c.Entry % 26) : name + "x", content);
                break;
        }
        using var output = new MemoryStream();
        using (var archive = new ZipArchive(output, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var (entryName, bytes) in entries)
            {
                using var stream = archive.CreateEntry(entryName, c.Stored ? CompressionLevel.NoCompression : CompressionLevel.Fastest).Open();
                stream.Write(bytes);
            }
        }
        return output.ToArray();
    }
}
