using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Training;

/// <summary>
/// Feature dumps: hidden-layer features of a dataset split, computed once by a frozen base model and stored as
/// compact binary chunks (never text) with a manifest, then read back as a streaming, shuffle-capable
/// <see cref="IDataView"/> (<c>mlContext.Data.LoadFeatureDump</c>). Writing is resumable: chunks are written
/// atomically and a rerun skips the ones already complete.
/// </summary>
/// <remarks>
/// Layout: <c>manifest.json</c>, <c>layer{n}/{chunk:D5}.bin</c> per layer and <c>teacher/{chunk:D5}.bin</c>
/// (base logits, base predicted key, ground-truth key). Chunk files start with a 32-byte header (magic
/// "GATIFCHK", version, kind, rows, values per row, chunk index, layer); see docs/model-format.md.
/// </remarks>
public static class FeatureDump
{
    private const int ChunkHeaderBytes = FeatureDumpChunks.HeaderBytes;
    private const int KindFloat32 = FeatureDumpChunks.KindFloat32;
    private const int KindFloat16 = FeatureDumpChunks.KindFloat16;
    private const int KindTeacher = FeatureDumpChunks.KindTeacher;
    private static byte[] ChunkMagic => FeatureDumpChunks.Magic;

    /// <summary>Bytes a dump of <paramref name="rows"/> rows would take.</summary>
    /// <param name="rows">Rows.</param>
    /// <param name="layerSizes">Values per row of each layer.</param>
    /// <param name="classes">Classes (teacher logits per row).</param>
    /// <param name="float16">Features stored as float16.</param>
    public static long EstimateBytes(long rows, IEnumerable<int> layerSizes, int classes, bool float16) =>
        rows * (layerSizes.Sum(s => (long)s) * (float16 ? 2 : 4) + (classes + 2L) * 4);

    /// <summary>
    /// Computes <paramref name="extractor"/>'s layers for every row of <paramref name="images"/> and writes them to
    /// <paramref name="directory"/>, resuming after the chunks an earlier (interrupted) call completed.
    /// </summary>
    public static FeatureDumpManifest Write(FeatureExtractingTransformer extractor, IDataView images, string directory, FeatureDumpOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(extractor);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        options ??= new FeatureDumpOptions();
        if (options.ChunkRows < 1) throw new ArgumentOutOfRangeException(nameof(options), options.ChunkRows, "ChunkRows must be positive.");
        var rows = images.GetRowCount() ?? throw new ArgumentException("The data must know its row count to be dumped (e.g. not a filtered view).", nameof(images));
        var inputShape = extractor.BaseModel.InputShape;
        var imageColumn = TrainingColumns.RequireImage(images.Schema, extractor.ImageColumnName, inputShape.Size);
        var labelColumn = images.Schema.GetColumnOrNull(options.LabelColumnName) is { Type: KeyDataViewType { RawType: var raw } } label && raw == typeof(uint) ? label : (DataViewSchema.Column?)null;
        Directory.CreateDirectory(directory);

        var expected = new FeatureDumpManifest
        {
            BaseModel = ModelIdentity.Of(extractor),
            BaseDescription = extractor.BaseModel is Models.ResNetBaseModel resnet
                ? $"{resnet.Config.Architecture} width {resnet.Config.BaseWidth} input {resnet.Config.InputShape}"
                : extractor.BaseModel.Description,
            Source = options.Source,
            Rows = rows,
            ChunkRows = options.ChunkRows,
            DataType = options.Float16 ? "float16" : "float32",
            Layers = extractor.Requests.Select(r => new FeatureDumpManifest.LayerEntry(r.Cut, Shape(extractor, r), r.Reduction.Suffix.TrimStart('.'))).ToList(),
            ClassNames = extractor.ClassNames.ToList(),
        };
        var manifest = File.Exists(Path.Combine(directory, FeatureDumpManifest.FileName)) ? Compatible(FeatureDumpManifest.Read(directory), expected, directory) : expected;
        if (manifest.Complete) return manifest;

        var done = manifest.Chunks.Where(c => ChunkFilesIntact(directory, manifest, c)).ToDictionary(c => c.Index);
        var sizes = extractor.Requests.Select(r => extractor.Shape(r).Size).ToArray();
        var classes = extractor.ClassNames.Count;
        var batch = extractor.BatchSize;
        var imageBatch = new float[batch * inputShape.Size];
        var layerBatch = sizes.Select(s => new float[batch * s]).ToArray();
        var logitsBatch = new float[batch * classes];
        var predictedBatch = new uint[batch];

        var active = labelColumn is { } lc ? new[] { imageColumn, lc } : [imageColumn];
        using var cursor = images.GetRowCursor(active);
        var getImage = cursor.GetGetter<VBuffer<float>>(imageColumn);
        var getLabel = labelColumn is { } l2 ? cursor.GetGetter<uint>(l2) : null;
        VBuffer<float> image = default;
        uint key = 0;

        for (var chunk = 0; chunk < manifest.ChunkCount; chunk++)
        {
            var chunkRows = (int)Math.Min(manifest.ChunkRows, rows - (long)chunk * manifest.ChunkRows);
            if (done.ContainsKey(chunk))
            {
                for (var i = 0; i < chunkRows; i++)
                    if (!cursor.MoveNext()) throw new InvalidOperationException("The data returned fewer rows than its row count.");
                continue;
            }
            // Stream each chunk's files batch by batch: memory stays at one batch whatever the chunk size.
            var writers = new List<ChunkWriter>();
            try
            {
                for (var j = 0; j < sizes.Length; j++)
                    writers.Add(new ChunkWriter(ChunkPath(directory, expected.Layers[j].Key, chunk), options.Float16 ? KindFloat16 : KindFloat32,
                        chunkRows, sizes[j], chunk, expected.Layers[j].Layer));
                var teacherWriter = new ChunkWriter(ChunkPath(directory, "teacher", chunk), KindTeacher, chunkRows, classes, chunk, 0);
                writers.Add(teacherWriter);
                var record = new byte[batch * (classes + 2) * 4];
                var labels = new uint[batch];
                for (var start = 0; start < chunkRows; start += batch)
                {
                    options.CancellationToken.ThrowIfCancellationRequested();
                    var n = Math.Min(batch, chunkRows - start);
                    for (var i = 0; i < n; i++)
                    {
                        if (!cursor.MoveNext()) throw new InvalidOperationException("The data returned fewer rows than its row count.");
                        getImage(ref image);
                        if (image.Length != inputShape.Size)
                            throw new InvalidDataException($"Row {cursor.Position}: '{imageColumn.Name}' has {image.Length} values, expected {inputShape.Size}.");
                        image.CopyTo(imageBatch.AsSpan(i * inputShape.Size, inputShape.Size));
                        labels[i] = 0;
                        if (getLabel is not null)
                        {
                            getLabel(ref key);
                            labels[i] = key;
                        }
                    }
                    extractor.Extract(imageBatch, n, layerBatch, logitsBatch, predictedBatch);
                    for (var j = 0; j < sizes.Length; j++) writers[j].Append(layerBatch[j].AsSpan(0, n * sizes[j]));
                    for (var i = 0; i < n; i++)
                    {
                        var row = record.AsSpan(i * (classes + 2) * 4, (classes + 2) * 4);
                        for (var c = 0; c < classes; c++) BinaryPrimitives.WriteSingleLittleEndian(row[(c * 4)..], logitsBatch[i * classes + c]);
                        BinaryPrimitives.WriteUInt32LittleEndian(row[(classes * 4)..], predictedBatch[i]);
                        BinaryPrimitives.WriteUInt32LittleEndian(row[((classes + 1) * 4)..], labels[i]);
                    }
                    teacherWriter.AppendBytes(record.AsSpan(0, n * (classes + 2) * 4));
                }
                var files = new Dictionary<string, string>();
                for (var j = 0; j < sizes.Length; j++) files[expected.Layers[j].Key] = writers[j].Commit();
                files["teacher"] = teacherWriter.Commit();
                done[chunk] = new FeatureDumpManifest.ChunkEntry(chunk, chunkRows, files);
            }
            finally
            {
                foreach (var writer in writers) writer.Dispose();
            }
            manifest = manifest with { Chunks = done.Values.OrderBy(c => c.Index).ToList() };
            manifest.Write(directory);
            options.Progress?.Report((Math.Min(rows, done.Values.Sum(c => (long)c.Rows)), rows));
        }
        manifest = manifest with { Chunks = done.Values.OrderBy(c => c.Index).ToList(), Complete = true };
        manifest.Write(directory);
        return manifest;
    }

    /// <summary>Verifies every chunk file of a dump against its SHA-256 in the manifest.</summary>
    public static void Verify(string directory)
    {
        var manifest = FeatureDumpManifest.Read(directory);
        foreach (var chunk in manifest.Chunks)
        {
            foreach (var (name, hash) in chunk.Files)
            {
                var path = ChunkPath(directory, name, chunk.Index);
                using var file = File.OpenRead(path);
                if (!Convert.ToHexString(SHA256.HashData(file)).Equals(hash, StringComparison.OrdinalIgnoreCase))
                    throw new DatasetFormatException(path, "checksum mismatch: the chunk is corrupt");
            }
        }
    }

    private static string ChunkPath(string directory, string name, int chunk) => FeatureDumpChunks.Path(directory, name, chunk);

    private static int[] Shape(FeatureExtractingTransformer extractor, Models.FeatureRequest request)
    {
        var shape = extractor.Shape(request);
        return [shape.Channels, shape.Height, shape.Width];
    }

    private static FeatureDumpManifest Compatible(FeatureDumpManifest existing, FeatureDumpManifest expected, string directory)
    {
        var differences = new List<string>();
        if (existing.BaseModel != expected.BaseModel) differences.Add("base model weights");
        if (existing.Source != expected.Source) differences.Add($"source ('{existing.Source}' vs '{expected.Source}')");
        if (existing.Rows != expected.Rows) differences.Add($"rows ({existing.Rows} vs {expected.Rows})");
        if (existing.ChunkRows != expected.ChunkRows) differences.Add($"chunk rows ({existing.ChunkRows} vs {expected.ChunkRows})");
        if (existing.DataType != expected.DataType) differences.Add($"data type ({existing.DataType} vs {expected.DataType})");
        var existingLayers = existing.Layers.Select(l => l.Key).ToArray();
        var expectedLayers = expected.Layers.Select(l => l.Key).ToArray();
        var sameLayers = existingLayers.SequenceEqual(expectedLayers);
        var holdsEveryLayer = expectedLayers.All(existingLayers.Contains);
        // A complete dump of more layers serves any subset of them (LoadFeatureDump(directory, layers) reads only those).
        if (!sameLayers && !(holdsEveryLayer && existing.Complete))
            differences.Add(holdsEveryLayer
                ? $"layers ({Layers(existingLayers)}, not yet complete, vs {Layers(expectedLayers)}: finish it with the same layers first)"
                : $"layers ({Layers(existingLayers)} vs {Layers(expectedLayers)})");
        if (differences.Count > 0)
            throw new InvalidOperationException(
                $"'{directory}' holds a different feature dump ({string.Join(", ", differences)} differ); delete it or choose another folder.");
        return existing;
    }

    private static string Layers(IEnumerable<string> layers) => string.Join(",", layers);

    private static bool ChunkFilesIntact(string directory, FeatureDumpManifest manifest, FeatureDumpManifest.ChunkEntry chunk)
    {
        foreach (var name in chunk.Files.Keys)
        {
            var info = new FileInfo(ChunkPath(directory, name, chunk.Index));
            if (!info.Exists) return false;
            var perRow = name == "teacher"
                ? (manifest.ClassNames.Count + 2) * 4L
                : manifest.Layers.Single(l => l.Key == name).Size * (manifest.DataType == "float16" ? 2L : 4L);
            if (info.Length != ChunkHeaderBytes + perRow * chunk.Rows) return false;
        }
        return true;
    }

    /// <summary>Writes one chunk file through a temporary file: header, appended rows, flush, hash, rename.</summary>
    private sealed class ChunkWriter : IDisposable
    {
        private readonly string _path;
        private readonly string _temp;
        private readonly int _kind;
        private readonly long _expectedBytes;
        private readonly FileStream _file;
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private byte[] _scratch = [];
        private long _written;
        private bool _committed;

        public ChunkWriter(string path, int kind, int rows, int valuesPerRow, int chunk, int layer)
        {
            _path = path;
            _kind = kind;
            _temp = path + $".{Environment.ProcessId}.tmp";
            _expectedBytes = (long)rows * valuesPerRow * (kind == KindFloat16 ? 2 : 4) + (kind == KindTeacher ? rows * 8L : 0);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            _file = new FileStream(_temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            var header = new byte[ChunkHeaderBytes];
            ChunkMagic.CopyTo(header, 0);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), 1);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(12), kind);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(16), rows);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(20), valuesPerRow);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(24), chunk);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(28), layer);
            AppendBytes(header);
            _written = 0;
        }

        public void Append(ReadOnlySpan<float> values)
        {
            var width = _kind == KindFloat16 ? 2 : 4;
            if (_scratch.Length < values.Length * width) _scratch = new byte[values.Length * width];
            var bytes = _scratch.AsSpan(0, values.Length * width);
            if (_kind == KindFloat16)
                for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(bytes[(i * 2)..], (Half)values[i]);
            else
                for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes[(i * 4)..], values[i]);
            AppendBytes(bytes);
        }

        public void AppendBytes(ReadOnlySpan<byte> bytes)
        {
            _file.Write(bytes);
            _hash.AppendData(bytes);
            _written += bytes.Length;
        }

        public string Commit()
        {
            if (_written != _expectedBytes)
                throw new InvalidOperationException($"Chunk {_path}: wrote {_written} bytes, expected {_expectedBytes}.");
            _file.Flush(flushToDisk: true);
            _file.Dispose();
            File.Move(_temp, _path, overwrite: true);
            _committed = true;
            return Convert.ToHexString(_hash.GetHashAndReset()).ToLowerInvariant();
        }

        public void Dispose()
        {
            _file.Dispose();
            _hash.Dispose();
            if (!_committed && File.Exists(_temp)) File.Delete(_temp);
        }
    }
}
