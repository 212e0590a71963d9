using Gati.MLNet.Data;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Transforms;
using Microsoft.ML;

namespace Gati.MLNet.Tests;

/// <summary>Loading model zips that are not what they should be (no training: the models here hold no network).</summary>
public sealed class ModelFilesTests : IDisposable
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
        Assert.Contains("ColumnConcatenatingTransformer", error.Message);
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

    internal sealed class ImageRow
    {
        [Microsoft.ML.Data.VectorType(1, 2, 2)]
        public float[] Image { get; set; } = [];
    }
}
