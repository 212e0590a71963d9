using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Transforms;
using Microsoft.ML;

namespace Gati.MLNet.Tests;

/// <summary>Loading model zips that are not what they should be (no training: the models here hold no network).</summary>
public sealed class ModelFilesTests(UntrainedModelZip untrained) : IClassFixture<UntrainedModelZip>, IDisposable
{
    private readonly TempDirectory _temp = new();
    private readonly MLContext _ml = new(seed: 1);

    public void Dispose() => _temp.Dispose();

    private sealed class Row
    {
        public float A { get; set; }

        public float B { get; set; }
    }

    [Fact]
    public void LoadModel_PlainMLNetModel_SaysItIsNotAGatiModel()
    {
        var data = _ml.Data.LoadFromEnumerable([new Row { A = 1, B = 2 }, new Row { A = 3, B = 4 }]);
        var model = _ml.Transforms.Concatenate("Features", "A", "B").Append(_ml.Transforms.NormalizeMinMax("Features")).Fit(data);
        var path = _temp.File("plain.zip");
        _ml.Model.Save(model, data.Schema, path);

        var error = Assert.Throws<InvalidDataException>(() => _ml.Gati().LoadModel(path, out _));

        Assert.StartsWith(path + ": ", error.Message);
        Assert.Contains("not a Gati.MLNet model", error.Message);
        Assert.Contains("ConcatTransform", error.Message);
    }

    [Fact]
    public void LoadModel_GatiComponentWithoutNetwork_Loads()
    {
        var data = _ml.Data.LoadFromEnumerable([new ImageRow { Image = new float[4] }]);
        var model = _ml.Transforms.NormalizeChannels("Normalized", "Image", new ChannelNormalization([0.5f], [0.25f])).Fit(data);
        var path = _temp.File("normalize.zip");
        _ml.Gati().SaveModel(model, data.Schema, path);

        var loaded = _ml.Gati().LoadModel(path, out var schema);

        Assert.IsType<ChannelNormalizingTransformer>(loaded);
        Assert.NotNull(schema.GetColumnOrNull("Image"));
    }

    [Fact]
    public void LoadModel_NotAZip_NamesTheFileFirst()
    {
        var path = _temp.File("model.zip");
        File.WriteAllText(path, "definitely not a model");

        var error = Assert.Throws<InvalidDataException>(() => _ml.Gati().LoadModel(path, out _));

        Assert.StartsWith(path + ": ", error.Message);
        Assert.Contains("not a readable ML.NET model zip", error.Message);
    }

    /// <summary>The untrained model zip with one entry's bytes changed (repacked, so every CRC is right).</summary>
    private string WithEntry(string entryName, Action<byte[]> change)
    {
        var path = _temp.File(Guid.NewGuid().ToString("N") + ".zip");
        File.WriteAllBytes(path, untrained.Bytes);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Update);
        var entry = zip.GetEntry(entryName)!;
        byte[] bytes;
        using (var stream = entry.Open())
        using (var copy = new MemoryStream())
        {
            stream.CopyTo(copy);
            bytes = copy.ToArray();
        }
        change(bytes);
        entry.Delete();
        using var replaced = zip.CreateEntry(entryName).Open();
        replaced.Write(bytes);
        return path;
    }

    private static int IndexOf(byte[] bytes, byte[] pattern) => bytes.AsSpan().IndexOf(pattern);

    [Fact]
    public async Task LoadModel_InputSchemaCountRunningPastItsEnd_FailsInsteadOfHanging()
    {
        // The saved input schema (ML.NET's binary format) declares the image column's dimensions as a count and the
        // values; a count larger than the entry made ML.NET's reader wait for bytes forever (found by ModelFuzzTests).
        var path = WithEntry("Schema", bytes =>
        {
            var count = IndexOf(bytes, Encoding.ASCII.GetBytes("Single\0")) + 7;
            Assert.Equal(3, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(count)));
            bytes[count + 2] = 1; // 3 → 65539 dimensions
        });

        var load = Task.Run(() => _ml.Gati().LoadModel(path, out _));
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => load.WaitAsync(TimeSpan.FromMinutes(2)));

        Assert.StartsWith(path + ": ", error.Message);
        Assert.Contains("input schema", error.Message);
    }

    [Fact]
    public async Task LoadModel_SecondInputSchemaEntryCorrupt_FailsInsteadOfHanging()
    {
        // A zip may hold a name twice; whichever "Schema" entry ML.NET reads must have been checked.
        var path = _temp.File("two-schemas.zip");
        File.WriteAllBytes(path, untrained.Bytes);
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Update))
        {
            byte[] bytes;
            using (var stream = zip.GetEntry("Schema")!.Open())
            using (var copy = new MemoryStream())
            {
                stream.CopyTo(copy);
                bytes = copy.ToArray();
            }
            bytes[IndexOf(bytes, Encoding.ASCII.GetBytes("Single\0")) + 9] = 1;
            using var duplicate = zip.CreateEntry("Schema").Open();
            duplicate.Write(bytes);
        }

        var load = Task.Run(() => _ml.Gati().LoadModel(path, out _));
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => load.WaitAsync(TimeSpan.FromMinutes(2)));

        Assert.StartsWith(path + ": its saved input schema is corrupt", error.Message);
    }

    [Fact]
    public void LoadModel_ChainCountFarBeyondItsTransformers_FailsWithoutAllocatingForIt()
    {
        // ML.NET's TransformerChain loader sizes its arrays from this count before reading anything else: a corrupt
        // count made loading a 67 KB zip allocate 16 GB (found by ModelFuzzTests).
        var path = WithEntry("TransformerChain/Model.key", bytes =>
        {
            var count = (int)BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(0x10)); // ML.NET's header: FpModel
            Assert.Equal(6, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(count)));
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(count), 0x7F7F7F7F);
        });

        Exception? error = null;
        var before = GC.GetAllocatedBytesForCurrentThread();
        error = Record.Exception(() => _ml.Gati().LoadModel(path, out _));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        var invalid = Assert.IsType<InvalidDataException>(error);
        Assert.StartsWith(path + ": ", invalid.Message);
        Assert.Contains("declares 2139062143 transformers", invalid.Message);
        Assert.True(allocated < 64 << 20, $"allocated {allocated} bytes");
    }

    [Fact]
    public void LoadModel_LoaderAssemblyNameCorrupt_FailsWithThePathInsteadOfFileNotFound()
    {
        // The chain's loader is found through the assembly its header names (found by ModelFuzzTests).
        var path = WithEntry("TransformerChain/Model.key", bytes =>
        {
            var name = IndexOf(bytes, Encoding.Unicode.GetBytes("Microsoft.ML.Data, Version="));
            bytes[name + 2 * "Microsoft.ML.D".Length] = (byte)'b';
        });

        var error = Record.Exception(() => _ml.Gati().LoadModel(path, out _));

        var invalid = Assert.IsType<InvalidDataException>(error);
        Assert.StartsWith(path + ": could not load the model", invalid.Message);
        Assert.Contains("Microsoft.ML.Dbta", invalid.Message);
    }

    [Fact]
    public void LoadModel_ConfigurationNeedingFarMoreWeightsThanStored_FailsBeforeBuildingTheNetwork()
    {
        // Base width 2 → 200: a ResNet-18 of 110 million parameters (440 MB; 1024, the largest valid width, makes
        // 11 GB) was built before its weights were found not to match; the stored weights are 50 KB.
        var path = WithEntry("TransformerChain/Transform_001/Model.key", bytes =>
        {
            var classNames = IndexOf(bytes, "\u000bT-shirt/top"u8.ToArray());
            var baseWidth = classNames - 8; // ..., class count, base width, class-name count, names
            Assert.Equal(2, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(baseWidth)));
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(baseWidth), 200);
        });

        var error = Assert.Throws<InvalidDataException>(() => _ml.Gati().LoadModel(path, out _));

        Assert.StartsWith(path + ": ", error.Message);
        Assert.Contains("ResNet18 base model needs", error.Message);
        Assert.Contains("its weights hold", error.Message);
    }

    [Theory]
    [InlineData(Models.ResNetArchitecture.ResNet18, 1, 2)]
    [InlineData(Models.ResNetArchitecture.ResNet34, 3, 3)]
    [InlineData(Models.ResNetArchitecture.ResNet50, 1, 1)]
    [InlineData(Models.ResNetArchitecture.ResNet101, 3, 2)]
    [InlineData(Models.ResNetArchitecture.ResNet152, 1, 2)]
    public void ParameterCount_EveryArchitecture_MatchesTheBuiltNetwork(Models.ResNetArchitecture architecture, int channels, int width)
    {
        var config = new Models.ResNetConfig(architecture, new TensorShape(channels, 32, 32), 7, width);
        using var network = new Models.ResNet(config);
        Assert.Equal(network.parameters().Sum(p => p.numel()), ModelFormat.ResNetConfigFormat.ParameterCount(config));
    }

    internal sealed class ImageRow
    {
        [Microsoft.ML.Data.VectorType(1, 2, 2)]
        public float[] Image { get; set; } = [];
    }
}
