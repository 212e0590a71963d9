using System.IO.Compression;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

public sealed class FeatureExtractionTests(SmallModelFixture fixture) : IClassFixture<SmallModelFixture>
{
    private IDataView Rows(int count) => fixture.Context.Data.TakeRows(fixture.Test, count);

    internal static float[][] Column(IDataView data, string name)
    {
        var column = data.Schema[name];
        var rows = new List<float[]>();
        using var cursor = data.GetRowCursor([column]);
        if (column.Type is KeyDataViewType)
        {
            var key = cursor.GetGetter<uint>(column);
            uint k = 0;
            while (cursor.MoveNext())
            {
                key(ref k);
                rows.Add([k]);
            }
            return rows.ToArray();
        }
        var getter = cursor.GetGetter<VBuffer<float>>(column);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            rows.Add(value.DenseValues().ToArray());
        }
        return rows.ToArray();
    }

    [Fact]
    public void Transform_LayerColumnsEqualTheNetworksBlockOutputs()
    {
        using var extractor = fixture.Context.Gati().ExtractFeatures(fixture.Model, 1, 3, 8).Fit(Rows(10));
        var data = extractor.Transform(Rows(10));
        Assert.Equal([8, 28, 28], ((VectorDataViewType)data.Schema["Layer1"].Type).Dimensions.ToArray());
        Assert.Equal([16, 14, 14], ((VectorDataViewType)data.Schema["Layer3"].Type).Dimensions.ToArray());
        Assert.Equal([64, 4, 4], ((VectorDataViewType)data.Schema["Layer8"].Type).Dimensions.ToArray());

        var images = Column(Rows(10), "Image");
        var layer3 = Column(data, "Layer3");
        var logits = Column(data, "BaseLogits");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = tensor(images.SelectMany(r => r).ToArray(), [10, 1, 28, 28]);
        var (expectedLogits, outputs) = fixture.Model.Network.ForwardWithLayers(x, [3]);
        var expected3 = outputs[0].reshape(10, -1).data<float>().ToArray();
        Assert.Equal(expected3, layer3.SelectMany(r => r), new FloatTolerance(1e-5f));
        Assert.Equal(expectedLogits.data<float>().ToArray(), logits.SelectMany(r => r), new FloatTolerance(1e-5f));
    }

    [Fact]
    public void Transform_BasePredictedLabelEqualsTheBaseModelsPrediction()
    {
        using var extractor = fixture.Context.Gati().ExtractFeatures(fixture.Model, 8).Fit(Rows(50));
        var teacher = Column(extractor.Transform(Rows(50)), "BasePredictedLabel");
        var predicted = Column(fixture.Model.Transform(Rows(50)), "PredictedLabel");
        Assert.Equal(predicted.Select(p => p[0]), teacher.Select(t => t[0]));
    }

    [Fact]
    public void Fit_AppendedAfterTheResNetEstimator_FindsTheBaseModel()
    {
        var options = SmallModelFixture.Options();
        options.Epochs = 1;
        var pipeline = fixture.Context.Gati().ResNet(options).Append(fixture.Context.Gati().ExtractFeatures(2, 5));
        var model = pipeline.Fit(fixture.Context.Data.TakeRows(fixture.Train, 64));
        var output = model.Transform(Rows(5));
        Assert.Equal(5, Column(output, "Layer5").Length);
        Assert.Equal(Column(output, "PredictedLabel").Select(p => p[0]), Column(output, "BasePredictedLabel").Select(p => p[0]));
    }

    [Fact]
    public void Fit_WithoutABaseModelUpstream_SaysWhatItNeeds()
    {
        var error = Assert.Throws<ArgumentException>(() => fixture.Context.Gati().ExtractFeatures(3).Fit(fixture.Test));
        Assert.Contains("needs the base model", error.Message);
    }

    [Fact]
    public void Create_LayerOutsideTheNetwork_IsRejected() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => fixture.Context.Gati().ExtractFeatures(fixture.Model, 9).Fit(Rows(1)));

    [Fact]
    public void SaveLoad_ChainOfBaseAndExtractor_StoresTheWeightsOnceAndSharesTheNetwork()
    {
        using var temp = new TempDirectory();
        var extractor = fixture.Context.Gati().ExtractFeatures(fixture.Model, 4).Fit(Rows(1));
        var chain = new TransformerChain<ITransformer>(fixture.Model, extractor);
        var path = temp.File("chain.zip");
        fixture.Context.Gati().SaveModel(chain, fixture.Test.Schema, path);
        using (var zip = ZipFile.OpenRead(path))
        {
            // The network's weights and its ONNX graph, once each.
            Assert.Single(zip.Entries, e => e.FullName.StartsWith("GatiShared/", StringComparison.Ordinal) && e.Name.EndsWith(".weights", StringComparison.Ordinal));
            Assert.Single(zip.Entries, e => e.FullName.StartsWith("GatiShared/", StringComparison.Ordinal) && e.Name.EndsWith(".onnx", StringComparison.Ordinal));
        }

        var loaded = (TransformerChain<ITransformer>)fixture.Context.Gati().LoadModel(path, out _);
        var loadedBase = Assert.IsType<ResNetTransformer>(loaded.First());
        var loadedExtractor = Assert.IsType<FeatureExtractingTransformer>(loaded.Last());
        Assert.Same(((IBaseModelHolder)loadedBase).Base.Model, ((IBaseModelHolder)loadedExtractor).Base.Model);
        Assert.Equal(Column(extractor.Transform(Rows(20)), "Layer4"), Column(loaded.Transform(Rows(20)), "Layer4"));
        loadedBase.Dispose();
        // The extractor still holds the shared network after the base model is disposed.
        Assert.Equal(20, Column(loadedExtractor.Transform(Rows(20)), "Layer4").Length);
        loadedExtractor.Dispose();
    }
}
