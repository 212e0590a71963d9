using Gati.MLNet.Data;
using Gati.MLNet.Training;
using Gati.MLNet.Transforms;
using Microsoft.ML;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>
/// A narrow ResNet-18 (width 8) trained for 2 epochs on 2,000 real Fashion-MNIST training images, shared by the
/// tests of one class. Test data: the first 500 test images.
/// </summary>
public sealed class SmallModelFixture : IDisposable
{
    public const int TrainRows = 2000;
    public const int TestRows = 500;

    public SmallModelFixture()
    {
        Context = new MLContext(seed: 1);
        Directory = RealData.FashionMnistDirectory;
        Train = Context.Data.TakeRows(Context.Data.LoadFashionMnist(DatasetSplit.Train, Directory), TrainRows);
        Test = Context.Data.TakeRows(Context.Data.LoadFashionMnist(DatasetSplit.Test, Directory), TestRows);
        Trainer = Context.Gati().ResNet(Options());
        Model = Trainer.Fit(Train);
    }

    public static ResNetTrainer.Options Options() => new()
    {
        BaseWidth = 8,
        Epochs = 2,
        BatchSize = 64,
        LearningRate = 0.05,
        Device = "cpu",
        Seed = 7,
    };

    public MLContext Context { get; }

    public string Directory { get; }

    public IDataView Train { get; }

    public IDataView Test { get; }

    public ResNetTrainer Trainer { get; }

    public ResNetTransformer Model { get; }

    public void Dispose() => Model.Dispose();
}
