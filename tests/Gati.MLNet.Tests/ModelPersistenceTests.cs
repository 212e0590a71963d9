using System.IO.Compression;
using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

public sealed class ModelPersistenceTests(SmallModelFixture fixture) : IClassFixture<SmallModelFixture>, IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    /// <summary>Scores the first rows in this process, in the probe's binary layout.</summary>
    private static byte[] InProcessOutputs(IDataView scored, params string[] columns)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer))
        {
            using var cursor = scored.GetRowCursor(columns.Select(c => scored.Schema[c]));
            var actions = columns.Select(name =>
            {
                var column = scored.Schema[name];
                if (column.Type is KeyDataViewType)
                {
                    var getter = cursor.GetGetter<uint>(column);
                    uint key = 0;
                    return (Action)(() =>
                    {
                        getter(ref key);
                        writer.Write(key);
                    });
                }
                var vector = cursor.GetGetter<VBuffer<float>>(column);
                VBuffer<float> value = default;
                return () =>
                {
                    vector(ref value);
                    foreach (var v in value.DenseValues()) writer.Write(v);
                };
            }).ToArray();
            while (cursor.MoveNext())
                foreach (var action in actions) action();
        }
        return buffer.ToArray();
    }

    private static byte[] FreshProcessOutputs(string model, string dataDir, int rows, string output, params string[] columns)
    {
        var (exitCode, log) = Processes.RunDotnet(Processes.SiblingAssembly("Gati.MLNet.ModelProbe"),
            [model, dataDir, "test", rows.ToString(System.Globalization.CultureInfo.InvariantCulture), output, .. columns]);
        Assert.True(exitCode == 0, log);
        return File.ReadAllBytes(output);
    }

    [Fact]
    public void SaveLoad_ResNetInAFreshProcess_GivesIdenticalScoresAndLabels()
    {
        var path = _temp.File("model.zip");
        fixture.Context.Model.Save(fixture.Model, fixture.Train.Schema, path);
        var expected = InProcessOutputs(fixture.Model.Transform(fixture.Test), "Score", "PredictedLabel");
        var actual = FreshProcessOutputs(path, fixture.Directory, SmallModelFixture.TestRows, _temp.File("out.bin"), "Score", "PredictedLabel");
        Assert.Equal(SmallModelFixture.TestRows * (10 * 4 + 4), actual.Length);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void SaveLoad_ChainWithNormalizeChannelsAndResNet_RoundTripsInAFreshProcess()
    {
        // A chain of two Gati transformers: the second reads the first's output column.
        var normalize = fixture.Context.Transforms.NormalizeChannels("Renormalized", "Image", new ChannelNormalization([0.5f], [2f]))
            .Fit(fixture.Test);
        var chain = new TransformerChain<ITransformer>(normalize, fixture.Model);
        var path = _temp.File("chain.zip");
        fixture.Context.Gati().SaveModel(chain, fixture.Train.Schema, path);
        var expected = InProcessOutputs(chain.Transform(fixture.Test), "Renormalized", "Score");
        var actual = FreshProcessOutputs(path, fixture.Directory, SmallModelFixture.TestRows, _temp.File("out.bin"), "Renormalized", "Score");
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Load_InThisProcess_RestoresConfigurationAndColumns()
    {
        var path = _temp.File("model.zip");
        fixture.Context.Gati().SaveModel(fixture.Model, fixture.Train.Schema, path);
        var loaded = fixture.Context.Gati().LoadModel(path, out var schema);
        var resnet = Assert.IsType<ResNetTransformer>(loaded);
        Assert.Equal(fixture.Model.Config, resnet.Config);
        Assert.Equal(fixture.Model.ClassNames, resnet.ClassNames);
        Assert.Equal("cpu", resnet.Device);
        // The dataset loader recorded Fashion-MNIST's normalisation on the Image column; the model keeps it.
        Assert.Equal(Data.ChannelNormalization.FashionMnist.Mean, resnet.InputNormalization!.Mean);
        Assert.Equal(Data.ChannelNormalization.FashionMnist.Std, resnet.InputNormalization.Std);
        Assert.NotNull(schema.GetColumnOrNull("Image"));
        resnet.Dispose();
    }

    [Fact]
    public void LoadModel_TruncatedZip_SaysTruncatedAndNamesTheFile()
    {
        var path = _temp.File("model.zip");
        fixture.Context.Gati().SaveModel(fixture.Model, fixture.Train.Schema, path);
        DatasetFiles.Truncate(path, new FileInfo(path).Length * 2 / 3);
        var error = Assert.Throws<InvalidDataException>(() => fixture.Context.Gati().LoadModel(path, out _));
        Assert.Contains(path, error.Message);
        Assert.Contains("truncated or corrupt", error.Message);
    }

    [Fact]
    public void LoadModel_NotAZip_SaysSo()
    {
        var path = _temp.File("model.zip");
        File.WriteAllText(path, "definitely not a model");
        var error = Assert.Throws<InvalidDataException>(() => fixture.Context.Gati().LoadModel(path, out _));
        Assert.Contains("not a readable ML.NET model zip", error.Message);
    }

    [Fact]
    public void LoadModel_Missing_NamesThePath()
    {
        var error = Assert.Throws<FileNotFoundException>(() => fixture.Context.Gati().LoadModel(_temp.File("nope.zip"), out _));
        Assert.Contains("nope.zip", error.Message);
    }

    [Fact]
    public void Load_TamperedWeights_FailsTheChecksum()
    {
        var path = _temp.File("model.zip");
        fixture.Context.Gati().SaveModel(fixture.Model, fixture.Train.Schema, path);
        // Rewrite the zip with one flipped byte inside the weights payload (a valid zip, wrong content).
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Update))
        {
            var entry = zip.Entries.Single(e => e.FullName.EndsWith(".weights", StringComparison.Ordinal));
            byte[] bytes;
            using (var stream = entry.Open())
            using (var copy = new MemoryStream())
            {
                stream.CopyTo(copy);
                bytes = copy.ToArray();
            }
            bytes[bytes.Length / 2] ^= 0x40;
            var name = entry.FullName;
            entry.Delete();
            using var replaced = zip.CreateEntry(name).Open();
            replaced.Write(bytes);
        }
        var error = Assert.Throws<InvalidDataException>(() => fixture.Context.Gati().LoadModel(path, out _));
        Assert.Contains(path, error.Message);
        Assert.Contains("checksum", error.Message);
    }

    [Fact]
    public void SaveModel_OverExistingFile_ReplacesItAtomically()
    {
        var path = _temp.File("model.zip");
        File.WriteAllText(path, "old");
        fixture.Context.Gati().SaveModel(fixture.Model, fixture.Train.Schema, path);
        Assert.NotEqual("old", File.ReadAllText(path)[..3]);
        Assert.Single(Directory.GetFiles(_temp.Path));
    }
}
