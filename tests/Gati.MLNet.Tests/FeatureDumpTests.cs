using System.Text.Json;
using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;

namespace Gati.MLNet.Tests;

public sealed class FeatureDumpTests(SmallModelFixture fixture) : IClassFixture<SmallModelFixture>, IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    private IDataView Rows(int count) => fixture.Context.Data.TakeRows(fixture.Test, count);

    private FeatureExtractingTransformer Extractor() => fixture.Context.Gati().ExtractFeatures(fixture.Model, 3, 8).Fit(Rows(1));

    [Fact]
    public void WriteThenLoad_Float32_RoundTripsEveryColumnAcrossChunks()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        var manifest = FeatureDump.Write(extractor, Rows(100), dir, new FeatureDumpOptions { ChunkRows = 40, Source = "test" });
        Assert.True(manifest.Complete);
        Assert.Equal(3, manifest.Chunks.Count);
        var dump = fixture.Context.Data.LoadFeatureDump(dir);
        Assert.Equal(100, dump.GetRowCount());
        Assert.True(dump.CanShuffle);
        var live = extractor.Transform(Rows(100));
        foreach (var column in new[] { "Layer3", "Layer8", "BaseLogits", "BasePredictedLabel" })
            Assert.Equal(FeatureExtractionTests.Column(live, column), FeatureExtractionTests.Column(dump, column));
        Assert.Equal(FeatureExtractionTests.Column(Rows(100), "Label"), FeatureExtractionTests.Column(dump, "Label"));
        FeatureDump.Verify(dir);
    }

    [Fact]
    public void WriteThenLoad_Float16_KeepsThreeSignificantDigitsAtHalfTheSize()
    {
        using var extractor = Extractor();
        var dir32 = _temp.Sub("f32");
        var dir16 = _temp.Sub("f16");
        FeatureDump.Write(extractor, Rows(30), dir32, new FeatureDumpOptions { ChunkRows = 16 });
        FeatureDump.Write(extractor, Rows(30), dir16, new FeatureDumpOptions { ChunkRows = 16, Float16 = true });
        var full = FeatureExtractionTests.Column(fixture.Context.Data.LoadFeatureDump(dir32), "Layer3").SelectMany(r => r).ToArray();
        var half = FeatureExtractionTests.Column(fixture.Context.Data.LoadFeatureDump(dir16), "Layer3").SelectMany(r => r).ToArray();
        Assert.All(full.Zip(half), pair => Assert.True(Math.Abs(pair.First - pair.Second) <= 1e-3 * Math.Max(1, Math.Abs(pair.First))));
        var size32 = new FileInfo(FeatureDumpChunks.Path(dir32, "layer3", 0)).Length;
        var size16 = new FileInfo(FeatureDumpChunks.Path(dir16, "layer3", 0)).Length;
        Assert.Equal(size32 - 32, 2 * (size16 - 32));
    }

    [Fact]
    public void Load_SubsetOfLayersAndShuffledCursor_ReturnsEveryRowOnce()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        FeatureDump.Write(extractor, Rows(50), dir, new FeatureDumpOptions { ChunkRows = 16 });
        var dump = fixture.Context.Data.LoadFeatureDump(dir, [8]);
        Assert.Null(dump.Schema.GetColumnOrNull("Layer3"));
        var ordered = FeatureExtractionTests.Column(dump, "Layer8");
        var shuffled = new List<float>();
        using (var cursor = dump.GetRowCursor([dump.Schema["Layer8"]], new Random(5)))
        {
            var getter = cursor.GetGetter<Microsoft.ML.Data.VBuffer<float>>(dump.Schema["Layer8"]);
            Microsoft.ML.Data.VBuffer<float> value = default;
            while (cursor.MoveNext())
            {
                getter(ref value);
                shuffled.Add(value.GetValues()[0] + value.GetValues()[1] * 1e-3f);
            }
        }
        Assert.Equal(ordered.Select(r => r[0] + r[1] * 1e-3f).Order(), shuffled.Order());
        Assert.NotEqual(ordered.Select(r => r[0] + r[1] * 1e-3f), shuffled);
    }

    [Fact]
    public void Load_TruncatedChunk_NamesTheFile()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        FeatureDump.Write(extractor, Rows(50), dir, new FeatureDumpOptions { ChunkRows = 20 });
        var chunk = FeatureDumpChunks.Path(dir, "layer3", 1);
        DatasetFiles.Truncate(chunk, new FileInfo(chunk).Length - 100);
        var error = Assert.Throws<DatasetFormatException>(() => fixture.Context.Data.LoadFeatureDump(dir));
        Assert.Equal(chunk, error.FilePath);
        Assert.Contains("truncated", error.Message);
    }

    [Fact]
    public void Load_ChunkFromAnotherLayer_IsAMismatch()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        FeatureDump.Write(extractor, Rows(50), dir, new FeatureDumpOptions { ChunkRows = 20 });
        File.Copy(FeatureDumpChunks.Path(dir, "layer8", 1), FeatureDumpChunks.Path(dir, "layer3", 1), overwrite: true);
        var error = Assert.Throws<DatasetFormatException>(() => fixture.Context.Data.LoadFeatureDump(dir));
        Assert.Contains("does not match the manifest", error.Message);
    }

    [Fact]
    public void Verify_FlippedByte_FailsTheChecksum()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        FeatureDump.Write(extractor, Rows(30), dir, new FeatureDumpOptions { ChunkRows = 16 });
        var chunk = FeatureDumpChunks.Path(dir, "teacher", 1);
        var bytes = File.ReadAllBytes(chunk);
        bytes[40] ^= 1;
        File.WriteAllBytes(chunk, bytes);
        var error = Assert.Throws<DatasetFormatException>(() => FeatureDump.Verify(dir));
        Assert.Equal(chunk, error.FilePath);
    }

    [Fact]
    public void Write_InterruptedThenRerun_ResumesAndMatchesAnUninterruptedDump()
    {
        using var extractor = Extractor();
        var once = _temp.Sub("once");
        FeatureDump.Write(extractor, Rows(90), once, new FeatureDumpOptions { ChunkRows = 20 });

        var resumed = _temp.Sub("resumed");
        using var stop = new CancellationTokenSource();
        var options = new FeatureDumpOptions { ChunkRows = 20, CancellationToken = stop.Token };
        options.Progress = new SynchronousProgress<(long Rows, long Total)>(p =>
        {
            if (p.Rows >= 40) stop.Cancel();
        });
        Assert.ThrowsAny<OperationCanceledException>(() => FeatureDump.Write(extractor, Rows(90), resumed, options));
        var partial = FeatureDumpManifest.Read(resumed);
        Assert.False(partial.Complete);
        Assert.Equal(2, partial.Chunks.Count);
        Assert.Contains("incomplete", Assert.Throws<DatasetFormatException>(() => fixture.Context.Data.LoadFeatureDump(resumed)).Message);

        var reported = new List<long>();
        FeatureDump.Write(extractor, Rows(90), resumed, new FeatureDumpOptions
        {
            ChunkRows = 20,
            Progress = new SynchronousProgress<(long Rows, long Total)>(p => reported.Add(p.Rows)),
        });
        Assert.Equal([60L, 80L, 90L], reported);
        var a = FeatureDumpManifest.Read(once);
        var b = FeatureDumpManifest.Read(resumed);
        Assert.Equal(JsonSerializer.Serialize(a.Chunks), JsonSerializer.Serialize(b.Chunks));
    }

    [Fact]
    public void Write_IntoAFolderOfAnotherDump_IsRefused()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        FeatureDump.Write(extractor, Rows(30), dir, new FeatureDumpOptions { ChunkRows = 16, Source = "first" });
        var error = Assert.Throws<InvalidOperationException>(() =>
            FeatureDump.Write(extractor, Rows(40), dir, new FeatureDumpOptions { ChunkRows = 16, Source = "second" }));
        Assert.Contains("holds a different feature dump", error.Message);
        Assert.Contains("rows (30 vs 40)", error.Message);
    }

    [Fact]
    public void Write_CompleteDumpOfMoreLayers_IsReusedForASubset()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        FeatureDump.Write(extractor, Rows(30), dir, new FeatureDumpOptions { ChunkRows = 16, Source = "s" });
        var stamp = File.GetLastWriteTimeUtc(FeatureDumpChunks.Path(dir, "layer8", 0));

        using var layer8Only = fixture.Context.Gati().ExtractFeatures(fixture.Model, 8).Fit(Rows(1));
        var manifest = FeatureDump.Write(layer8Only, Rows(30), dir, new FeatureDumpOptions { ChunkRows = 16, Source = "s" });
        Assert.Equal([3, 8], manifest.Layers.Select(l => l.Layer));
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(FeatureDumpChunks.Path(dir, "layer8", 0)));
        var dump = fixture.Context.Data.LoadFeatureDump(dir, [8]);
        Assert.Equal(FeatureExtractionTests.Column(layer8Only.Transform(Rows(30)), "Layer8"), FeatureExtractionTests.Column(dump, "Layer8"));
    }

    [Fact]
    public void Write_IncompleteDumpOfMoreLayers_IsRefusedWithWhatToDo()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        FeatureDump.Write(extractor, Rows(40), dir, new FeatureDumpOptions { ChunkRows = 16, Source = "s" });
        var manifestPath = Path.Combine(dir, FeatureDumpManifest.FileName);
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        var completeKey = json.Select(p => p.Key).Single(k => k.Equals("complete", StringComparison.OrdinalIgnoreCase));
        json[completeKey] = false;
        File.WriteAllText(manifestPath, json.ToJsonString());

        using var layer8Only = fixture.Context.Gati().ExtractFeatures(fixture.Model, 8).Fit(Rows(1));
        var error = Assert.Throws<InvalidOperationException>(() =>
            FeatureDump.Write(layer8Only, Rows(40), dir, new FeatureDumpOptions { ChunkRows = 16, Source = "s" }));
        Assert.Contains("layers (layer3,layer8, not yet complete, vs layer8", error.Message);
    }

    [Fact]
    public void EstimateBytes_MatchesTheFilesWritten()
    {
        using var extractor = Extractor();
        var dir = _temp.Sub("dump");
        var manifest = FeatureDump.Write(extractor, Rows(40), dir, new FeatureDumpOptions { ChunkRows = 16 });
        var payload = Directory.EnumerateFiles(dir, "*.bin", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length - 32);
        Assert.Equal(FeatureDump.EstimateBytes(40, manifest.Layers.Select(l => l.Size), 10, float16: false), payload);
    }
}
