using Gati.MLNet.Data;
using Gati.MLNet.Inference;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Models.Selectors;
using Gati.MLNet.Policy;
using Gati.MLNet.Torch;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>
/// A model zip holding every kind of Gati.MLNet component — NormalizeChannels, a width-2 ResNet-18, a feature extractor,
/// an FC predictor, a selector and learned caches — built from seeded, untrained networks (nothing is trained), so its
/// bytes are the same on every run. For tests of the model loader on corrupted copies.
/// </summary>
public sealed class UntrainedModelZip : IDisposable
{
    private readonly TempDirectory _temp = new();

    public UntrainedModelZip()
    {
        var ml = new MLContext(0);
        var classes = FashionMnist.ClassNames;
        var config = new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 28, 28), classes.Count, BaseWidth: 2);
        var normalization = ChannelNormalization.FashionMnist;
        var input = ml.Data.LoadFromEnumerable([new PixelRow { Pixels = new float[784] }]);

        var normalize = ml.Transforms.NormalizeChannels("Image", "Pixels", normalization).Fit(input);
        using var resnet = new ResNetTransformer(ml, SeededInit.Create(1, () => new ResNet(config)), torch.CPU, classes, "Image", "Score", "PredictedLabel", 64,
            normalization);
        using var extractor = new FeatureExtractingTransformer(ml, resnet.BaseModel.Acquire(), "Image", [3], "Layer", "BaseLogits", "BasePredictedLabel", 64);
        var features = extractor.LayerShape(3).Size;
        var summary = new PredictorTrainingSummary(1, 1, 0.5);
        var predictorNetwork = new SharedModule<PredictorNetwork>(SeededInit.Create(2, () => PredictorNetwork.Create(PredictorArchitecture.FC(4), features, classes.Count)), torch.CPU);
        var selectorNetwork = new SharedModule<SelectorNetwork>(SeededInit.Create(3, () => new SelectorNetwork(SelectorArchitecture.Default, classes.Count)), torch.CPU);
        var calibration = new ExitCalibration(0.9f, 0.99, 0.5, 0.4, 100, 0.8) { CorrectRows = 80, Curve = [new CalibrationPoint(0.9f, 0.99, 0.4, 40)] };
        using var predictor = new PredictorTransformer(ml, predictorNetwork.Acquire(), 3, classes, "Layer3", "Layer3Score", "Layer3PredictedLabel", 64, summary);
        using var selector = new SelectorTransformer(ml, selectorNetwork.Acquire(), 3, "Layer3Score", "Layer3ExitProbability", "Layer3Exit", calibration, 64);
        using var caches = new LearnedCachesTransformer(ml, resnet.BaseModel.Acquire(), "Image",
            [new LearnedCache(3, extractor.LayerShape(3), predictorNetwork, selectorNetwork, calibration, summary)], new LearnedCachesTransformer.Columns(), 64);

        Path = _temp.File("untrained.zip");
        ml.Gati().SaveModel(new TransformerChain<ITransformer>(normalize, resnet, extractor, predictor, selector, caches), input.Schema, Path);
        Bytes = File.ReadAllBytes(Path);
    }

    /// <summary>The saved zip.</summary>
    public string Path { get; }

    /// <summary>Its bytes.</summary>
    public byte[] Bytes { get; }

    public void Dispose() => _temp.Dispose();

    private sealed class PixelRow
    {
        [VectorType(1, 28, 28)]
        public float[] Pixels { get; set; } = [];
    }
}
