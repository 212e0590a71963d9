using Gati.MLNet.Torch;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Transforms;
using TorchSharp;
using TorchSharp.Modules;

namespace Gati.MLNet.Training;

/// <summary>
/// A training checkpoint file (docs/model-format.md), written after every epoch through a temporary file, a flush
/// and an atomic rename, so a killed process leaves either the previous or the new checkpoint, never a torn one:
/// <code>
/// 8 bytes  magic "GATICKPT"
/// int32    format version (2; version 1, which held exactly one network and its optimizer, is still read)
/// string   header (JSON: run kind, settings that must match to resume, progress, history)
/// int32    section count
/// sections name (string), length (int64), SHA-256 (32 bytes), bytes: network weights (ModuleWeights envelope)
///          or optimizer state (TorchSharp state_dict)
/// </code>
/// </summary>
internal static class TrainingCheckpoint
{
    private static readonly byte[] Magic = Encoding.ASCII.GetBytes("GATICKPT");

    /// <summary>Checkpoint JSON: NaN and infinities (an epoch without validation, say) are written as named literals, never refused.</summary>
    internal static readonly JsonSerializerOptions Json = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };
    private const int FormatVersion = 2;
    private const long MaxSectionBytes = 16L << 30;

    internal sealed record Header
    {
        public required string Kind { get; init; }
        public required Dictionary<string, string> Settings { get; init; }
        public required int EpochsCompleted { get; init; }
        public List<EpochSummary> History { get; init; } = [];
        public string[] ClassNames { get; init; } = [];

        /// <summary>Free-form progress of runs that train several networks (JSON).</summary>
        public string? State { get; init; }
    }

    public static byte[] ModuleBytes(torch.nn.Module module)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true)) ModuleWeights.Write(writer, module);
        return buffer.ToArray();
    }

    public static void LoadModule(byte[] section, torch.nn.Module module, string what)
    {
        using var reader = new BinaryReader(new MemoryStream(section, writable: false));
        ModuleWeights.Read(reader, module, what);
    }

    public static byte[] OptimizerBytes(OptimizerHelper optimizer)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true)) optimizer.save_state_dict(writer);
        return buffer.ToArray();
    }

    public static void LoadOptimizer(byte[] section, OptimizerHelper optimizer)
    {
        using var reader = new BinaryReader(new MemoryStream(OptimizerSection(section, optimizer), writable: false));
        optimizer.load_state_dict(reader);
    }

    // Checkpoints from before SafeSgd hold TorchSharp's SGD state, which TorchSharp tags with the type name "SGD".
    // SafeSgd is an SGD with the same state layout, so such a section loads once its tag is rewritten.
    private static byte[] OptimizerSection(byte[] section, OptimizerHelper optimizer)
    {
        if (optimizer is not SafeSgd) return section;
        using var reader = new BinaryReader(new MemoryStream(section, writable: false), Encoding.UTF8);
        string tag;
        try { tag = reader.ReadString(); }
        catch (Exception e) when (e is EndOfStreamException or FormatException) { return section; }
        if (tag != nameof(TorchSharp.Modules.SGD)) return section;
        using var rewritten = new MemoryStream();
        using (var writer = new BinaryWriter(rewritten, Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(nameof(SafeSgd));
            writer.Write(section, (int)reader.BaseStream.Position, section.Length - (int)reader.BaseStream.Position);
        }
        return rewritten.ToArray();
    }

    public static void Write(string path, Header header, IReadOnlyList<(string Name, byte[] Bytes)> sections)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, $".{Path.GetFileName(path)}.{Environment.ProcessId}.tmp");
        try
        {
            using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                using (var writer = new BinaryWriter(file, Encoding.UTF8, leaveOpen: true))
                {
                    writer.Write(Magic);
                    writer.Write(FormatVersion);
                    writer.Write(JsonSerializer.Serialize(header, Json));
                    writer.Write(sections.Count);
                    foreach (var (name, bytes) in sections)
                    {
                        writer.Write(name);
                        writer.Write((long)bytes.Length);
                        writer.Write(SHA256.HashData(bytes));
                        writer.Write(bytes);
                    }
                }
                file.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>Reads only the header (to decide whether and how to resume).</summary>
    public static Header ReadHeader(string path)
    {
        using var file = File.OpenRead(path);
        using var reader = new BinaryReader(file, Encoding.UTF8);
        ReadHeader(reader, path, out var header);
        return header;
    }

    /// <summary>Version 1: a weights envelope ("model") then a checked optimizer state ("optimizer").</summary>
    private static Dictionary<string, byte[]> ReadVersion1Sections(FileStream file, BinaryReader reader, string path)
    {
        var start = file.Position;
        ModuleWeights.ReadPayload(reader, $"network in checkpoint {path}");
        var envelopeLength = file.Position - start;
        file.Position = start;
        var model = reader.ReadBytes((int)envelopeLength);
        var length = reader.ReadInt64();
        if (length < 0 || length > file.Length - file.Position - 32)
            throw new InvalidDataException($"Checkpoint {path}: optimizer state is truncated or corrupt.");
        var hash = reader.ReadBytes(32);
        var state = reader.ReadBytes((int)length);
        if (state.Length != length || !SHA256.HashData(state).AsSpan().SequenceEqual(hash))
            throw new InvalidDataException($"Checkpoint {path}: optimizer state is corrupt (checksum mismatch).");
        return new Dictionary<string, byte[]> { ["model"] = model, ["optimizer"] = state };
    }

    /// <summary>Reads every section, verifying lengths and checksums.</summary>
    public static Dictionary<string, byte[]> ReadSections(string path)
    {
        using var file = File.OpenRead(path);
        using var reader = new BinaryReader(file, Encoding.UTF8);
        var version = ReadHeader(reader, path, out _);
        try
        {
            if (version == 1) return ReadVersion1Sections(file, reader, path);
            var count = reader.ReadInt32();
            if (count < 0 || count > 100_000) throw new InvalidDataException($"Checkpoint {path} is corrupt (section count {count}).");
            var sections = new Dictionary<string, byte[]>(count);
            for (var i = 0; i < count; i++)
            {
                var name = reader.ReadString();
                var length = reader.ReadInt64();
                if (length < 0 || length > MaxSectionBytes || length > file.Length - file.Position - 32)
                    throw new InvalidDataException($"Checkpoint {path}: section '{name}' is truncated or corrupt.");
                var hash = reader.ReadBytes(32);
                var bytes = reader.ReadBytes((int)length);
                if (bytes.Length != length || !SHA256.HashData(bytes).AsSpan().SequenceEqual(hash))
                    throw new InvalidDataException($"Checkpoint {path}: section '{name}' is corrupt (checksum mismatch).");
                sections[name] = bytes;
            }
            return sections;
        }
        catch (EndOfStreamException ex)
        {
            throw new InvalidDataException($"Checkpoint {path} is truncated.", ex);
        }
    }

    public static byte[] Section(Dictionary<string, byte[]> sections, string name, string path) =>
        sections.TryGetValue(name, out var bytes) ? bytes : throw new InvalidDataException($"Checkpoint {path} has no section '{name}'.");

    private static int ReadHeader(BinaryReader reader, string path, out Header header)
    {
        try
        {
            var magic = reader.ReadBytes(Magic.Length);
            if (!magic.AsSpan().SequenceEqual(Magic))
                throw new InvalidDataException($"{path} is not a Gati training checkpoint (bad magic).");
            var version = reader.ReadInt32();
            if (version is < 1 or > FormatVersion)
                throw new InvalidDataException($"Checkpoint {path} has format version {version}; this build reads versions 1..{FormatVersion}.");
            header = JsonSerializer.Deserialize<Header>(reader.ReadString(), Json)
                     ?? throw new InvalidDataException($"Checkpoint {path} has an empty header.");
            return version;
        }
        catch (EndOfStreamException ex)
        {
            throw new InvalidDataException($"Checkpoint {path} is truncated.", ex);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"Checkpoint {path} has a corrupt header: {ex.Message}", ex);
        }
    }

    /// <summary>Throws, naming every setting that differs, unless the checkpoint belongs to this run.</summary>
    public static void CheckCompatible(Header header, string kind, IReadOnlyDictionary<string, string> settings, string path)
    {
        if (header.Kind != kind)
            throw new InvalidOperationException($"Checkpoint {path} was written by a {header.Kind} run, not a {kind} run.");
        // Both ways: a setting recorded only when it applies (e.g. baseHeadStart) differs when either side lacks it.
        var differences = settings.Keys.Union(header.Settings.Keys)
            .Where(key => settings.GetValueOrDefault(key) != header.Settings.GetValueOrDefault(key))
            .Select(key => $"{key}: checkpoint {header.Settings.GetValueOrDefault(key) ?? "(absent)"}, now {settings.GetValueOrDefault(key) ?? "(absent)"}")
            .ToArray();
        if (differences.Length > 0)
            throw new InvalidOperationException(
                $"Checkpoint {path} belongs to a different run and cannot be resumed ({string.Join("; ", differences)}). " +
                "Use the original settings, or delete the checkpoint / choose another path to start afresh.");
    }
}
