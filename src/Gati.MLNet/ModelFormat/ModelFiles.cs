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

    public static ITransformer Load(MLContext context, string path, out DataViewSchema inputSchema)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model file not found: {path}", path);
        // Check the container first: ML.NET's own messages for a non-zip or truncated file do not name the file.
        try
        {
            using var zip = ZipFile.OpenRead(path);
            if (zip.Entries.Count == 0) throw new InvalidDataException($"{path} is an empty zip, not an ML.NET model.");
            foreach (var entry in zip.Entries)
            {
                // Reading every entry verifies its CRC: a torn or bit-flipped file fails here with a clear message.
                using var entryStream = entry.Open();
                entryStream.CopyTo(Stream.Null);
            }
        }
        catch (InvalidDataException ex)
        {
            throw new InvalidDataException($"{path} is not a readable ML.NET model zip (truncated or corrupt): {ex.Message}", ex);
        }
        try
        {
            return context.Model.Load(path, out inputSchema);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or InvalidDataException or EndOfStreamException
                                       or ArgumentException or System.Reflection.TargetInvocationException)
        {
            throw new InvalidDataException($"Could not load the model in {path}: {Innermost(ex).Message}", ex);
        }
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex is System.Reflection.TargetInvocationException or InvalidOperationException && ex.InnerException is { } inner)
            ex = inner;
        return ex;
    }
}
