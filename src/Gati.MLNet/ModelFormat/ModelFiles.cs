using System.IO.Compression;
using Microsoft.ML;

namespace Gati.MLNet.ModelFormat;

/// <summary>Saving and loading ML.NET model zips safely: atomic writes, and loads that say what is wrong.</summary>
internal static class ModelFiles
{
    public static void Save(MLContext context, ITransformer model, DataViewSchema? inputSchema, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var full = Path.GetFullPath(path);
        var directory = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                context.Model.Save(model, inputSchema, stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>
    /// Loads a Gati.MLNet model zip. Every failure that is the file's fault is an <see cref="InvalidDataException"/>
    /// whose message starts with the path (docs/model-format.md); a missing file is a <see cref="FileNotFoundException"/>.
    /// </summary>
    public static ITransformer Load(MLContext context, string path, out DataViewSchema inputSchema)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model file not found: {path}", path);
        // Check the container first: ML.NET's own messages for a non-zip or truncated file do not name the file.
        int entries;
        try
        {
            using var zip = ZipFile.OpenRead(path);
            entries = zip.Entries.Count;
            foreach (var entry in zip.Entries)
            {
                // Reading every entry verifies its CRC: a torn or bit-flipped file fails here with a clear message.
                using var entryStream = entry.Open();
                entryStream.CopyTo(Stream.Null);
            }
        }
        catch (InvalidDataException ex)
        {
            throw Problem(path, $"not a readable ML.NET model zip (truncated or corrupt): {ex.Message}", ex);
        }
        if (entries == 0) throw Problem(path, "an empty zip, not an ML.NET model");
        ITransformer model;
        try
        {
            model = context.Model.Load(path, out inputSchema);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or InvalidDataException or EndOfStreamException
                                       or ArgumentException or System.Reflection.TargetInvocationException)
        {
            throw Problem(path, $"could not load the model: {Innermost(ex).Message}", ex);
        }
        // Any ML.NET model zip loads above; one without our components would only fail later, far from its cause
        // (e.g. "Could not find input column"), so say what it is here.
        var components = Components(model).ToArray();
        if (!components.Any(c => c is Transforms.GatiTransformerBase))
        {
            foreach (var component in components) (component as IDisposable)?.Dispose();
            var found = components.Length == 0 ? "no transformer" : string.Join(", ", components.Select(c => c.GetType().Name).Distinct());
            throw Problem(path, $"not a Gati.MLNet model: it holds {found} and no Gati.MLNet component (mlContext.Model.Load reads other ML.NET models)");
        }
        return model;
    }

    private static IEnumerable<ITransformer> Components(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Components) : [model];

    private static InvalidDataException Problem(string path, string problem, Exception? inner = null) => new($"{path}: {problem}", inner);

    private static Exception Innermost(Exception ex)
    {
        while (ex is System.Reflection.TargetInvocationException or InvalidOperationException && ex.InnerException is { } inner)
            ex = inner;
        return ex;
    }
}
