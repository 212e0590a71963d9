using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gati.MLNet.Tests;

public sealed class EarlyExitModelTests
{
    [Fact]
    public void Of_ASavedModelInANestedChain_FindsPrefixBaseAndCaches()
    {
        using var zip = new UntrainedModelZip();
        var context = new MLContext(0);
        var loaded = context.Gati().LoadModel(zip.Path, out _);
        try
        {
            var components = EarlyExitModel.ComponentsOf(loaded);
            // Wrapping the chain in another changes nothing: nested chains are flattened.
            var nested = new TransformerChain<ITransformer>(new TransformerChain<ITransformer>(components[0], components[1]), new TransformerChain<ITransformer>([.. components.Skip(2)]));
            var model = EarlyExitModel.Of(nested, "the test model");
            Assert.Equal(components, model.Components);
            Assert.Equal(6, model.Components.Count);
            Assert.Same(components[0], Assert.Single(model.Prefix)); // NormalizeChannels makes the base model's input
            Assert.IsType<ResNetTransformer>(model.BaseTransformer);
            Assert.Same(components[5], model.Caches);
            Assert.Equal("Image", model.ImageColumnName);
            Assert.Equal(((ResNetTransformer)components[1]).BaseModel.Description, model.Description);
            Assert.Equal([components[0], components[1]], EarlyExitModel.ComponentsOf(model.Full));
            Assert.Equal([components[0], components[1], components[5]], EarlyExitModel.ComponentsOf(model.With(model.Caches!)));

            using var stricter = model.Caches!.WithPrecisionTarget(0.999);
            var replaced = EarlyExitModel.ComponentsOf(model.Replacing(stricter));
            Assert.Equal([.. components.Take(5), stricter], replaced);
        }
        finally
        {
            EarlyExitModel.DisposeComponents(loaded);
        }
    }

    [Fact]
    public void Of_AChainWithoutABaseModel_NamesTheSource()
    {
        var context = new MLContext(0);
        var data = context.Data.LoadFromEnumerable([new Row { Value = 1 }]);
        var copy = context.Transforms.CopyColumns("B", "Value").Fit(data);
        Assert.Null(EarlyExitModel.Find(copy));
        var error = Assert.Throws<InvalidOperationException>(() => EarlyExitModel.Of(copy, "model.zip"));
        Assert.StartsWith("model.zip holds no Gati base model", error.Message);
        Assert.Throws<InvalidOperationException>(() => EarlyExitModel.Find(new TransformerChain<ITransformer>(copy)) ?? throw new InvalidOperationException());
    }

    private sealed class Row
    {
        public float Value { get; set; }
    }
}
