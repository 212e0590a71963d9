using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Gati.MLNet.ModelFormat;
using TorchSharp;

namespace Gati.MLNet.Training;

/// <summary>One finished epoch's figures, kept in checkpoints and reported after training.</summary>
public sealed record EpochSummary(int Epoch, double Loss, double Accuracy, double? ValidationAccuracy, double ImagesPerSecond, double Seconds);

/// <summary>
/// A training checkpoint file (docs/model-format.md), written after every epoch through a temporary file and an
/// atomic rename, so a killed process leaves either the previous or the new checkpoint, never a torn one:
/// <code>
/// 8 bytes  magic "GATICKPT"
/// int32    format version (1)
/// string   header (JSON: run settings that must match to resume, epochs done, per-epoch history)
/// weights  ModuleWeights envelope of the network
/// int64    optimizer state length, 32 bytes SHA-256, optimizer state (TorchSharp optimizer state_dict)
/// </code>
/// </summary>
internal static class TrainingCheckpoint
{
    private static readonly byte[] Magic = Encoding.ASCII.GetBytes("GATICKPT");
    private const int FormatVersion = 1;

    internal sealed record Header
    {
        public required string Kind { get; init; }
        public required Dictionary<string, string> Settings { get; init; }
        public required int EpochsCompleted { get; init; }
        public required List<EpochSummary> History { get; init; }
        public required string[] ClassNames { get; init; }
    }

    public static void Write(string path, Header header, torch.nn.Module module, TorchSharp.Modules.OptimizerHelper optimizer)
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
                    writer.Write(JsonSerializer.Serialize(header));
                    ModuleWeights.Write(writer, module);
                    byte[] state;
                    using (var buffer = new MemoryStream())
                    {
                        using (var stateWriter = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true))
                            optimizer.save_state_dict(stateWriter);
                        state = buffer.ToArray();
                    }
                    writer.Write((long)state.Length);
                    writer.Write(SHA256.HashData(state));
                    writer.Write(state);
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
        return ReadHeader(reader, path);
    }

    /// <summary>Restores network and optimizer state from a checkpoint whose header was accepted.</summary>
    public static void Restore(string path, torch.nn.Module module, TorchSharp.Modules.OptimizerHelper optimizer, string what)
    {
        using var file = File.OpenRead(path);
        using var reader = new BinaryReader(file, Encoding.UTF8);
        ReadHeader(reader, path);
        try
        {
            ModuleWeights.Read(reader, module, $"{what} in checkpoint {path}");
            var length = reader.ReadInt64();
            if (length < 0 || length > file.Length - file.Position - 32)
                throw new InvalidDataException($"Checkpoint {path}: optimizer state is truncated or corrupt.");
            var hash = reader.ReadBytes(32);
            var state = reader.ReadBytes((int)length);
            if (state.Length != length || !SHA256.HashData(state).AsSpan().SequenceEqual(hash))
                throw new InvalidDataException($"Checkpoint {path}: optimizer state is corrupt (checksum mismatch).");
            using var stateReader = new BinaryReader(new MemoryStream(state, writable: false));
            optimizer.load_state_dict(stateReader);
        }
        catch (EndOfStreamException ex)
        {
            throw new InvalidDataException($"Checkpoint {path} is truncated.", ex);
        }
    }

    private static Header ReadHeader(BinaryReader reader, string path)
    {
        try
        {
            var magic = reader.ReadBytes(Magic.Length);
            if (!magic.AsSpan().SequenceEqual(Magic))
                throw new InvalidDataException($"{path} is not a Gati training checkpoint (bad magic).");
            var version = reader.ReadInt32();
            if (version != FormatVersion)
                throw new InvalidDataException($"Checkpoint {path} has format version {version}; this build reads version {FormatVersion}.");
            return JsonSerializer.Deserialize<Header>(reader.ReadString())
                   ?? throw new InvalidDataException($"Checkpoint {path} has an empty header.");
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
        var differences = settings
            .Where(s => !header.Settings.TryGetValue(s.Key, out var saved) || saved != s.Value)
            .Select(s => $"{s.Key}: checkpoint {(header.Settings.TryGetValue(s.Key, out var saved) ? saved : "(absent)")}, now {s.Value}")
            .ToArray();
        if (differences.Length > 0)
            throw new InvalidOperationException(
                $"Checkpoint {path} belongs to a different run and cannot be resumed ({string.Join("; ", differences)}). " +
                "Use the original settings, or delete the checkpoint / choose another path to start afresh.");
    }
}
