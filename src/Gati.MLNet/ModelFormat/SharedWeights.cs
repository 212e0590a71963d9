using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Gati.MLNet.Torch;
using Microsoft.ML;
using TorchSharp;

namespace Gati.MLNet.ModelFormat;

/// <summary>
/// Content-addressed weights inside a model zip: <c>GatiShared/&lt;sha256&gt;.weights</c>, each a
/// <see cref="ModuleWeights"/> envelope. Transformers of one chain that use the same network (base model, feature
/// extractor, learned caches) store a reference to one entry, so the weights are written once; loading one zip
/// builds the network once and shares it between those transformers.
/// </summary>
internal static class SharedWeights
{
    public const string Directory = "GatiShared";

    private static readonly ConditionalWeakTable<RepositoryWriter, HashSet<string>> Written = new();
    private static readonly ConditionalWeakTable<RepositoryReader, Dictionary<string, object>> Loaded = new();

    /// <summary>Writes the module's weights unless this zip already holds them; returns their key.</summary>
    public static string Save(ModelSaveContext ctx, torch.nn.Module module)
    {
        byte[] envelope;
        using (var buffer = new MemoryStream())
        {
            using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true))
                ModuleWeights.Write(writer, module);
            envelope = buffer.ToArray();
        }
        return SaveBytes(ctx, envelope, "weights");
    }

    /// <summary>
    /// Writes a shared module's weights: the envelope it was loaded from when it was never built (so that re-saving a
    /// model served from ONNX does not load libtorch), else the module's current weights.
    /// </summary>
    public static string Save<TModule>(ModelSaveContext ctx, SharedModule<TModule> shared) where TModule : torch.nn.Module
    {
        if (!shared.IsBuilt && shared.StoredEnvelope is { } stored) return SaveBytes(ctx, stored, "weights");
        using (shared.Use()) return Save(ctx, shared.Module);
    }

    /// <summary>
    /// The module stored under <paramref name="key"/>, built by <paramref name="create"/> (on the CPU), loaded and moved
    /// to the device <paramref name="device"/> names — on first use, so that a process serving the zip's ONNX graphs
    /// never loads libtorch — or the instance already loaded from this zip, with one more holder. The stored bytes are
    /// read and checked (checksum, envelope, size against <paramref name="parameterCount"/>) now.
    /// </summary>
    /// <param name="ctx">The loading model's context (its zip).</param>
    /// <param name="key">The weights' SHA-256 key.</param>
    /// <param name="create">Builds the untrained module.</param>
    /// <param name="device">Where the module runs (called when it is built: it may ask libtorch about CUDA).</param>
    /// <param name="what">What the weights belong to, for messages.</param>
    /// <param name="parameterCount">The parameters the module will have (from its configuration): weights too small
    /// for them are refused before the module is built, so a corrupt size field cannot make it allocate gigabytes.</param>
    public static SharedModule<TModule> Load<TModule>(ModelLoadContext ctx, string key, Func<TModule> create, Func<torch.Device> device, string what,
        long parameterCount)
        where TModule : torch.nn.Module
    {
        var loaded = Loaded.GetOrCreateValue(ctx.Repository ?? throw new NotSupportedException("Gati models are loaded from model zips."));
        lock (loaded)
        {
            if (loaded.TryGetValue(key, out var existing) && existing is SharedModule<TModule> { IsDisposed: false } shared)
                return shared.Acquire();
            var envelope = ReadEntry(ctx, key, "weights", what);
            if (parameterCount > envelope.Length / sizeof(float))
                throw new InvalidDataException(
                    $"Corrupt model: the {what} needs {parameterCount} parameters ({parameterCount * sizeof(float)} bytes), but its weights hold {envelope.Length} bytes ({Directory}/{key}.weights).");
            byte[] payload;
            using (var reader = new BinaryReader(new MemoryStream(envelope, writable: false)))
                payload = ModuleWeights.ReadPayload(reader, what);
            var result = new SharedModule<TModule>(() =>
            {
                TorchRuntime.EnsureInitialized();
                var target = device();
                var module = SeededInit.Unseeded(create); // its throwaway initial weights must not disturb a seeded construction elsewhere
                try
                {
                    ModuleWeights.Load(payload, module, what);
                    module.to(target);
                    module.eval(); // loaded for inference; fine-tuning switches its own copies to training mode
                }
                catch
                {
                    module.Dispose();
                    throw;
                }
                return (module, target);
            }, envelope);
            loaded[key] = result;
            return result;
        }
    }

    /// <summary>Writes an ONNX graph (or any other immutable bytes) unless this zip already holds them; returns their key.</summary>
    public static string SaveBytes(ModelSaveContext ctx, byte[] bytes, string extension)
    {
        if (!ctx.InRepository)
            throw new NotSupportedException("Gati models are saved into model zips (mlContext.Model.Save), not raw streams.");
        var key = Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();
        var written = Written.GetOrCreateValue(ctx.Repository);
        lock (written)
        {
            if (written.Add(key + "." + extension))
            {
                using var entry = ctx.Repository.CreateEntry(Directory, key + "." + extension);
                entry.Stream.Write(bytes);
            }
        }
        return key;
    }

    /// <summary>
    /// The object built by <paramref name="parse"/> from the bytes stored under <paramref name="key"/> (checksum checked),
    /// shared by every component of this zip that refers to them.
    /// </summary>
    public static T LoadShared<T>(ModelLoadContext ctx, string key, string extension, string what, Func<byte[], T> parse) where T : class
    {
        var loaded = Loaded.GetOrCreateValue(ctx.Repository ?? throw new NotSupportedException("Gati models are loaded from model zips."));
        lock (loaded)
        {
            var slot = extension + ":" + key;
            if (loaded.TryGetValue(slot, out var existing) && existing is T shared) return shared;
            var result = parse(ReadEntry(ctx, key, extension, what));
            loaded[slot] = result;
            return result;
        }
    }

    private static byte[] ReadEntry(ModelLoadContext ctx, string key, string extension, string what)
    {
        if (!ctx.InRepository) throw new NotSupportedException("Gati models are loaded from model zips.");
        if (key.Length != 64 || !key.All(Uri.IsHexDigit))
            throw new InvalidDataException($"Corrupt model: the {what} refers to '{key}', which is not a SHA-256 key.");
        using var entry = ctx.Repository.OpenEntryOrNull(Directory, key + "." + extension)
            ?? throw new InvalidDataException($"Corrupt model: the {what} ({Directory}/{key}.{extension}) is missing from the zip.");
        byte[] bytes;
        using (var buffer = new MemoryStream())
        {
            entry.Stream.CopyTo(buffer);
            bytes = buffer.ToArray();
        }
        if (!Convert.ToHexString(SHA256.HashData(bytes)).Equals(key, StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"The {what} is corrupt: SHA-256 checksum mismatch ({Directory}/{key}.{extension}).");
        return bytes;
    }
}
