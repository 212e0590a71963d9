using System.Security.Cryptography;
using System.Text;
using TorchSharp;

namespace Gati.MLNet.ModelFormat;

/// <summary>
/// The checked envelope around a TorchSharp module's weights (docs/model-format.md):
/// <code>
/// 8 bytes  magic "GATIWTS1"
/// int32    envelope version (1)
/// int64    payload length in bytes
/// 32 bytes SHA-256 of the payload
/// payload  TorchSharp Module.save format (parameter and buffer names, shapes, dtypes, data)
/// </code>
/// Reading validates magic, length and checksum before TorchSharp parses anything, so truncated or corrupt
/// weights fail with a message that says so instead of a native error.
/// </summary>
internal static class ModuleWeights
{
    private static readonly byte[] Magic = Encoding.ASCII.GetBytes("GATIWTS1");
    private const int EnvelopeVersion = 1;

    /// <summary>Largest payload accepted (guards allocations against a corrupt length field).</summary>
    private const long MaxPayloadBytes = 16L << 30;

    public static void Write(BinaryWriter writer, torch.nn.Module module)
    {
        if (NonFiniteTensors(module) is { Count: > 0 } bad)
            throw new InvalidOperationException($"Refusing to save weights that hold NaN or infinite values ({Describe(bad)}): the network diverged in training.");
        byte[] payload;
        using (var buffer = new MemoryStream())
        {
            using (var moduleWriter = new BinaryWriter(buffer, Encoding.UTF8, leaveOpen: true))
                module.save(moduleWriter);
            payload = buffer.ToArray();
        }
        writer.Write(Magic);
        writer.Write(EnvelopeVersion);
        writer.Write((long)payload.Length);
        writer.Write(SHA256.HashData(payload));
        writer.Write(payload);
    }

    /// <summary>Loads weights into <paramref name="module"/> (which must have the saved architecture).</summary>
    /// <param name="reader">Positioned at the envelope.</param>
    /// <param name="module">A freshly built module of the same architecture (on the CPU).</param>
    /// <param name="what">What the weights belong to, for messages (e.g. "ResNet18 base model").</param>
    public static void Read(BinaryReader reader, torch.nn.Module module, string what) => Load(ReadPayload(reader, what), module, what);

    /// <summary>Loads a checked payload (<see cref="ReadPayload"/>) into <paramref name="module"/>.</summary>
    public static void Load(byte[] payload, torch.nn.Module module, string what)
    {
        try
        {
            using var payloadReader = new BinaryReader(new MemoryStream(payload, writable: false));
            module.load(payloadReader, strict: true);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or IOException or FormatException or System.Runtime.InteropServices.ExternalException)
        {
            throw new InvalidDataException($"The weights of the {what} do not match its architecture: {ex.Message}", ex);
        }
        if (NonFiniteTensors(module) is { Count: > 0 } bad)
            throw new InvalidDataException($"The weights of the {what} hold NaN or infinite values ({Describe(bad)}): it was saved from a diverged training run and cannot predict anything.");
    }

    /// <summary>Names of the floating-point parameters and buffers that hold a NaN or an infinity.</summary>
    internal static List<string> NonFiniteTensors(torch.nn.Module module)
    {
        var bad = new List<string>();
        using var scope = torch.NewDisposeScope();
        foreach (var (name, tensor) in module.state_dict())
        {
            if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>()) bad.Add(name);
        }
        return bad;
    }

    private static string Describe(List<string> names) => string.Join(", ", names.Take(3)) + (names.Count > 3 ? $" and {names.Count - 3} more" : "");

    /// <summary>Reads and verifies an envelope, returning its payload.</summary>
    public static byte[] ReadPayload(BinaryReader reader, string what)
    {
        try
        {
            var magic = reader.ReadBytes(Magic.Length);
            if (!magic.AsSpan().SequenceEqual(Magic))
                throw new InvalidDataException($"The {what} holds no Gati weights (bad magic): the model file is corrupt or not a Gati.MLNet model.");
            var version = reader.ReadInt32();
            if (version != EnvelopeVersion)
                throw new InvalidDataException($"The weights of the {what} use envelope version {version}; this build reads version {EnvelopeVersion}.");
            var length = reader.ReadInt64();
            if (length < 0 || length > MaxPayloadBytes)
                throw new InvalidDataException($"The weights of the {what} declare {length} bytes: the model file is corrupt.");
            if (reader.BaseStream.CanSeek && reader.BaseStream.Length - reader.BaseStream.Position < 32 + length)
                throw new InvalidDataException($"The weights of the {what} are truncated: {length} bytes declared, {Math.Max(0, reader.BaseStream.Length - reader.BaseStream.Position - 32)} present.");
            var hash = reader.ReadBytes(32);
            var payload = reader.ReadBytes(checked((int)length));
            if (hash.Length != 32 || payload.Length != length)
                throw new InvalidDataException($"The weights of the {what} are truncated: {length} bytes declared, {payload.Length} present.");
            if (!SHA256.HashData(payload).AsSpan().SequenceEqual(hash))
                throw new InvalidDataException($"The weights of the {what} are corrupt: SHA-256 checksum mismatch.");
            return payload;
        }
        catch (EndOfStreamException ex)
        {
            throw new InvalidDataException($"The weights of the {what} are truncated.", ex);
        }
    }
}
