using System.Buffers.Binary;
using System.IO.Compression;
using Gati.MLNet.Transforms;
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
        var names = new List<string>();
        var schemas = new List<byte[]?>(1);
        var streams = new List<(string Name, byte[] Head)>();
        try
        {
            using var zip = ZipFile.OpenRead(path);
            foreach (var entry in zip.Entries)
            {
                // Reading every entry verifies its CRC: a torn or bit-flipped file fails here with a clear message.
                using var entryStream = entry.Open();
                var name = entry.FullName.Replace('\\', '/');
                names.Add(name);
                // Every entry ML.NET could take for the schema (a zip may hold a name twice) is kept for the check below.
                if (name == SchemaEntryName) schemas.Add(ReadAtMost(entryStream, MaxSchemaBytes));
                else if (name.EndsWith(ModelStreamName, StringComparison.Ordinal)) streams.Add((name, ReadHead(entryStream)));
                else entryStream.CopyTo(Stream.Null);
            }
        }
        catch (InvalidDataException ex)
        {
            throw Problem(path, $"not a readable ML.NET model zip (truncated or corrupt): {ex.Message}", ex);
        }
        if (names.Count == 0) throw Problem(path, "an empty zip, not an ML.NET model");
        CheckModelStreams(path, names, streams);
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
        var components = EarlyExitModel.ComponentsOf(model).ToArray();
        if (!components.Any(c => c is Transforms.GatiTransformerBase))
        {
            foreach (var component in components) (component as IDisposable)?.Dispose();
            var found = components.Length == 0 ? "no transformer" : string.Join(", ", components.Select(c => c.GetType().Name).Distinct());
            throw Problem(path, $"not a Gati.MLNet model: it holds {found} and no Gati.MLNet component (mlContext.Model.Load reads other ML.NET models)");
        }
        return model;
    }

    /// <summary>Each component's ML.NET model stream, in its own folder of the zip.</summary>
    private const string ModelStreamName = "Model.key";

    private static readonly HashSet<string> GatiLoaders =
    [
        Transforms.ResNetTransformer.LoaderSignature, Transforms.ChannelNormalizingTransformer.LoaderSignature,
        Transforms.FeatureExtractingTransformer.LoaderSignature, Transforms.PredictorTransformer.LoaderSignature,
        Transforms.SelectorTransformer.LoaderSignature, Transforms.LearnedCachesTransformer.LoaderSignature,
        Transforms.ImportedModelTransformer.LoaderSignature,
    ];

    /// <summary>
    /// Checks made on ML.NET's model stream headers before ML.NET parses the streams (its 256-byte ModelHeader: signature
    /// "ML\0MODEL", FpModel at 0x10, CbModel at 0x18, the loader's name in ASCII at 0x50; ML.NET 6.0.x is pinned).
    /// A zip none of whose streams names a Gati loader is refused before ML.NET runs any other library's loaders on
    /// it; and a TransformerChain cannot declare more transformers than its stream has room for or its folder holds,
    /// because ML.NET sizes two arrays from that count before reading further (found by fuzzing: 16 GB for a 67 KB zip).
    /// </summary>
    private static void CheckModelStreams(string path, List<string> names, List<(string Name, byte[] Head)> streams)
    {
        var loaders = new List<string>();
        foreach (var (name, head) in streams)
        {
            if (head.Length < ModelHeaderSize || !head.AsSpan(0, 8).SequenceEqual("ML\0MODEL"u8)) continue; // ML.NET refuses it itself
            var loader = System.Text.Encoding.ASCII.GetString(head, 0x50, 24).TrimEnd('\0');
            loaders.Add(loader);
            if (loader != "TransformerChain") continue;
            var fpModel = BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(0x10));
            var cbModel = BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(0x18));
            if (fpModel < ModelHeaderSize || cbModel < 4 || fpModel > head.Length - 4) continue; // likewise
            var count = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan((int)fpModel));
            var folder = name[..^ModelStreamName.Length];
            var present = names.Count(n => n.StartsWith(folder + "Transform_", StringComparison.Ordinal) && n.EndsWith("/" + ModelStreamName, StringComparison.Ordinal)
                                           && n.Count(c => c == '/') == folder.Count(c => c == '/') + 1);
            if (count < 0 || count > (cbModel - 4) / 4 || count > present)
                throw Problem(path, $"could not load the model: its transformer chain ({name}) declares {count} transformers, but the zip holds {present}: the model file is corrupt");
        }
        if (loaders.Count > 0 && !loaders.Any(GatiLoaders.Contains))
            throw Problem(path, $"not a Gati.MLNet model: its components are {string.Join(", ", loaders.Distinct())} and none is a Gati.MLNet component (mlContext.Model.Load reads other ML.NET models)");
    }

    private const int ModelHeaderSize = 0x100;

    /// <summary>The first bytes of a model stream (its header and the start of its data); the rest is read for the CRC only.</summary>
    private static byte[] ReadHead(Stream stream)
    {
        var head = new byte[4096];
        var length = 0;
        int read;
        while (length < head.Length && (read = stream.Read(head, length, head.Length - length)) > 0) length += read;
        stream.CopyTo(Stream.Null);
        return head[..length];
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
