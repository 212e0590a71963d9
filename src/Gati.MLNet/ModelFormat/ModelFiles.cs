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
        var schemas = new List<byte[]?>(1);
        try
        {
            using var zip = ZipFile.OpenRead(path);
            entries = zip.Entries.Count;
            foreach (var entry in zip.Entries)
            {
                // Reading every entry verifies its CRC: a torn or bit-flipped file fails here with a clear message.
                using var entryStream = entry.Open();
                // Every entry ML.NET could take for the schema (a zip may hold a name twice) is kept for the check below.
                if (entry.FullName.Replace('\\', '/') == SchemaEntryName) schemas.Add(ReadAtMost(entryStream, MaxSchemaBytes));
                else entryStream.CopyTo(Stream.Null);
            }
        }
        catch (InvalidDataException ex)
        {
            throw Problem(path, $"not a readable ML.NET model zip (truncated or corrupt): {ex.Message}", ex);
        }
        if (entries == 0) throw Problem(path, "an empty zip, not an ML.NET model");
        foreach (var schema in schemas)
        {
            if (schema is null) throw Problem(path, $"its input schema entry is larger than {MaxSchemaBytes} bytes: not an ML.NET model's schema");
            CheckInputSchema(context, path, schema);
        }
        ITransformer model;
        try
        {
            model = context.Model.Load(path, out inputSchema);
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or InvalidDataException or IOException or ArgumentException
                                       or BadImageFormatException or TypeLoadException or System.Reflection.TargetInvocationException)
        {
            // The file exists (checked above), so a FileNotFoundException here is an assembly named inside the model.
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

    /// <summary>ML.NET's name for the zip entry holding the model's input schema (its binary data format, no rows).</summary>
    private const string SchemaEntryName = "Schema";

    /// <summary>A schema of a few columns with class names is a few KB; a larger entry is not a model's schema.</summary>
    private const int MaxSchemaBytes = 16 << 20;

    /// <summary>
    /// Reads the saved input schema with ML.NET's own reader, from a stream that throws at its end: on a count that runs
    /// past the entry, ML.NET's read loop waits for more bytes forever on the stream it opens itself (found by
    /// fuzzing). What parses here parses identically in <c>Model.Load</c>, which reads the same bytes.
    /// </summary>
    private static void CheckInputSchema(MLContext context, string path, byte[] schema)
    {
        try
        {
            var view = context.Data.LoadFromBinary(new EndCheckedSource(schema));
            _ = view.Schema;
            (view as IDisposable)?.Dispose();
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or InvalidDataException or IOException or ArgumentException
                                       or OverflowException or IndexOutOfRangeException)
        {
            throw Problem(path, $"its saved input schema is corrupt: {Innermost(ex).Message}", ex);
        }
    }

    /// <summary>The stream's bytes, or null when there are more than <paramref name="limit"/> (read no further).</summary>
    private static byte[]? ReadAtMost(Stream source, int limit)
    {
        using var copy = new MemoryStream();
        var buffer = new byte[81920];
        int read;
        while ((read = source.Read(buffer, 0, buffer.Length)) > 0)
        {
            if (copy.Length + read > limit) return null;
            copy.Write(buffer, 0, read);
        }
        return copy.ToArray();
    }

    private static IEnumerable<ITransformer> Components(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.SelectMany(Components) : [model];

    private static InvalidDataException Problem(string path, string problem, Exception? inner = null) => new($"{path}: {problem}", inner);

    /// <summary>One in-memory stream, for ML.NET's binary reader.</summary>
    private sealed class EndCheckedSource(byte[] bytes) : Microsoft.ML.Data.IMultiStreamSource
    {
        public int Count => 1;

        public string GetPathOrNull(int index) => SchemaEntryName;

        public Stream Open(int index) => new EndCheckedStream(bytes);

        public TextReader OpenTextReader(int index) => new StreamReader(Open(index));
    }

    /// <summary>A read-only stream over bytes that throws when asked to read at its end instead of returning 0.</summary>
    private sealed class EndCheckedStream(byte[] bytes) : MemoryStream(bytes, writable: false)
    {
        public override int Read(byte[] buffer, int offset, int count)
        {
            ThrowAtEnd(count);
            return base.Read(buffer, offset, count);
        }

        public override int Read(Span<byte> buffer)
        {
            ThrowAtEnd(buffer.Length);
            return base.Read(buffer);
        }

        public override int ReadByte()
        {
            ThrowAtEnd(1);
            return base.ReadByte();
        }

        private void ThrowAtEnd(int wanted)
        {
            if (wanted > 0 && Position >= Length) throw new EndOfStreamException("The input schema ends where more of it was expected.");
        }
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex is System.Reflection.TargetInvocationException or InvalidOperationException && ex.InnerException is { } inner)
            ex = inner;
        return ex;
    }
}
