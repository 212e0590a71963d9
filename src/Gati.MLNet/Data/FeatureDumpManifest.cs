using System.Text.Json;
using System.Text.Json.Serialization;

namespace Gati.MLNet.Data;

/// <summary>The <c>manifest.json</c> of a feature dump (docs/model-format.md#feature-dumps).</summary>
public sealed record FeatureDumpManifest
{
    internal const string FileName = "manifest.json";
    internal const string FormatName = "gati-feature-dump";
    internal const int CurrentVersion = 1;

    /// <summary>Always "gati-feature-dump".</summary>
    public string Format { get; init; } = FormatName;

    /// <summary>Format version.</summary>
    public int Version { get; init; } = CurrentVersion;

    /// <summary>SHA-256 key of the base model's weights envelope (identifies the network that produced the features).</summary>
    public required string BaseModel { get; init; }

    /// <summary>Base architecture, width and input shape, for humans.</summary>
    public required string BaseDescription { get; init; }

    /// <summary>What was dumped (dataset and split), for humans and for resuming.</summary>
    public required string Source { get; init; }

    /// <summary>Rows in the dump.</summary>
    public required long Rows { get; init; }

    /// <summary>Rows per chunk (the last chunk may hold fewer).</summary>
    public required int ChunkRows { get; init; }

    /// <summary>"float32" or "float16" for feature values (logits are always float32).</summary>
    public required string DataType { get; init; }

    /// <summary>The dumped layers and their [C, H, W].</summary>
    public required List<LayerEntry> Layers { get; init; }

    /// <summary>Class names in label order.</summary>
    public required List<string> ClassNames { get; init; }

    /// <summary>Chunks written so far, with each file's SHA-256.</summary>
    public List<ChunkEntry> Chunks { get; init; } = [];

    /// <summary>True once every chunk is written.</summary>
    public bool Complete { get; init; }

    /// <summary>Number of chunks the dump has when complete.</summary>
    [JsonIgnore]
    public int ChunkCount => (int)((Rows + ChunkRows - 1) / ChunkRows);

    /// <summary>A dumped layer (cut point).</summary>
    /// <param name="Layer">1-based layer (cut point).</param>
    /// <param name="Shape">[C, H, W] of the stored features (after the reduction).</param>
    /// <param name="Reduction">"" for the features as computed, else the reduction applied first (e.g. "grid4", "pool4096").</param>
    public sealed record LayerEntry(int Layer, int[] Shape, string Reduction = "")
    {
        /// <summary>Values per row.</summary>
        [JsonIgnore]
        public int Size => Shape.Aggregate(1, (a, b) => checked(a * b));

        /// <summary>The entry's folder and file key: layer{n}, or layer{n}.{reduction}.</summary>
        [JsonIgnore]
        public string Key => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"layer{Layer}") + (Reduction.Length == 0 ? "" : "." + Reduction);
    }

    /// <summary>A written chunk.</summary>
    /// <param name="Index">0-based chunk index.</param>
    /// <param name="Rows">Rows in this chunk.</param>
    /// <param name="Files">SHA-256 of each file, keyed by "layer{n}" (or "layer{n}.{reduction}") and "teacher".</param>
    public sealed record ChunkEntry(int Index, int Rows, Dictionary<string, string> Files);

    internal static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    internal static FeatureDumpManifest Read(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"No feature dump in '{directory}' ({FileName} is missing).", path);
        FeatureDumpManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<FeatureDumpManifest>(File.ReadAllText(path), Json)
                ?? throw new DatasetFormatException(path, "empty manifest");
        }
        catch (JsonException ex)
        {
            throw new DatasetFormatException(path, $"corrupt manifest: {ex.Message}", ex);
        }
        if (manifest.Format != FormatName) throw new DatasetFormatException(path, $"not a Gati feature dump (format '{manifest.Format}')");
        if (manifest.Version != CurrentVersion) throw new DatasetFormatException(path, $"feature dump version {manifest.Version}; this build reads version {CurrentVersion}");
        if (manifest.Rows < 0 || manifest.ChunkRows < 1 || manifest.Layers.Count == 0 || manifest.ClassNames.Count < 2 || manifest.DataType is not ("float32" or "float16"))
            throw new DatasetFormatException(path, "manifest fields are out of range");
        if (manifest.Layers.Any(l => l.Reduction.Any(c => !char.IsAsciiLetterOrDigit(c))))
            throw new DatasetFormatException(path, "a layer's reduction name holds other characters than letters and digits");
        return manifest;
    }

    internal void Write(string directory)
    {
        var path = Path.Combine(directory, FileName);
        var temp = path + $".{Environment.ProcessId}.tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(this, Json));
        File.Move(temp, path, overwrite: true);
    }
}
