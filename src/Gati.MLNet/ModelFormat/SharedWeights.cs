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
        if (!ctx.InRepository)
            throw new NotSupportedException("Gati models are saved into model zips (mlContext.Model.Save), not raw streams.");
        byte[] envelope;
        using (var buffer = new MemoryStream())
        {
            using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true))
                ModuleWeights.Write(writer, module);
            envelope = buffer.ToArray();
        }
        var key = Convert.ToHexString(SHA256.HashData(envelope)).ToLowerInvariant();
        var written = Written.GetOrCreateValue(ctx.Repository);
        lock (written)
        {
            if (written.Add(key))
            {
                using var entry = ctx.Repository.CreateEntry(Directory, key + ".weights");
                entry.Stream.Write(envelope);
            }
        }
        return key;
    }

    /// <summary>
    /// The module stored under <paramref name="key"/>, built by <paramref name="create"/> (on the CPU), loaded and
    /// moved to <paramref name="device"/> — or the instance already loaded from this zip, with one more holder.
    /// </summary>
    /// <param name="ctx">The loading model's context (its zip).</param>
    /// <param name="key">The weights' SHA-256 key.</param>
    /// <param name="create">Builds the untrained module.</param>
    /// <param name="device">Where the module runs.</param>
    /// <param name="what">What the weights belong to, for messages.</param>
    /// <param name="parameterCount">The parameters the module will have (from its configuration): weights too small
    /// for them are refused before the module is built, so a corrupt size field cannot make it allocate gigabytes.</param>
    public static SharedModule<TModule> Load<TModule>(ModelLoadContext ctx, string key, Func<TModule> create, torch.Device device, string what,
        long parameterCount)
        where TModule : torch.nn.Module
    {
        if (!ctx.InRepository) throw new NotSupportedException("Gati models are loaded from model zips.");
        if (key.Length != 64 || !key.All(Uri.IsHexDigit))
            throw new InvalidDataException($"Corrupt model: the {what} refers to weights '{key}', which is not a SHA-256 key.");
        var loaded = Loaded.GetOrCreateValue(ctx.Repository);
        lock (loaded)
        {
            if (loaded.TryGetValue(key, out var existing) && existing is SharedModule<TModule> { IsDisposed: false } shared && shared.Device.Equals(device))
                return shared.Acquire();

            using var entry = ctx.Repository.OpenEntryOrNull(Directory, key + ".weights")
                ?? throw new InvalidDataException($"Corrupt model: the weights of the {what} ({Directory}/{key}.weights) are missing from the zip.");
            byte[] envelope;
            using (var buffer = new MemoryStream())
            {
                entry.Stream.CopyTo(buffer);
                envelope = buffer.ToArray();
            }
            if (!Convert.ToHexString(SHA256.HashData(envelope)).Equals(key, StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"The weights of the {what} are corrupt: SHA-256 checksum mismatch ({Directory}/{key}.weights).");
            if (parameterCount > envelope.Length / sizeof(float))
                throw new InvalidDataException(
                    $"Corrupt model: the {what} needs {parameterCount} parameters ({parameterCount * sizeof(float)} bytes), but its weights hold {envelope.Length} bytes ({Directory}/{key}.weights).");
            var module = SeededInit.Unseeded(create); // its throwaway initial weights must not disturb a seeded construction elsewhere
            try
            {
                using var reader = new BinaryReader(new MemoryStream(envelope, writable: false));
                ModuleWeights.Read(reader, module, what);
                module.to(device);
            }
            catch
            {
                module.Dispose();
                throw;
            }
            var result = new SharedModule<TModule>(module, device);
            loaded[key] = result;
            return result;
        }
    }
}
