using Gati.MLNet.Data;
using Gati.MLNet.ModelFormat;
using Gati.MLNet.Models;
using Gati.MLNet.Tests.Infrastructure;
using Gati.MLNet.Training;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gati.MLNet.Tests;

public sealed class NonFiniteTrainingTests
{
    private static IDataView TrainRows(MLContext context, int rows) =>
        context.Data.TakeRows(context.Data.LoadFashionMnist(DatasetSplit.Train, RealData.FashionMnistDirectory), rows);

    [Fact]
    public void ResNetFit_DivergingLearningRate_ThrowsNamingEpochAndBatchAndWritesNoCheckpoint()
    {
        using var temp = new TempDirectory();
        var context = new MLContext(seed: 1);
        var checkpoint = temp.File("diverged.ckpt");
        var trainer = context.Gati().ResNet(new ResNetTrainer.Options
        {
            BaseWidth = 4, Epochs = 1, BatchSize = 32, LearningRate = 1e6, Device = "cpu", Seed = 3, CheckpointPath = checkpoint,
        });
        var error = Assert.Throws<TrainingDivergedException>(() => trainer.Fit(TrainRows(context, 320)));
        Assert.Equal(1, error.Epoch);
        Assert.InRange(error.Batch, 1, 10);
        Assert.Contains("diverged at epoch 1, batch", error.Message);
        Assert.Contains("learning rate", error.Message);
        Assert.False(File.Exists(checkpoint));
    }

    [Fact]
    public void PredictorFit_DivergingLearningRate_Throws()
    {
        var context = new MLContext(seed: 2);
        var rows = Enumerable.Range(0, 64).Select(i => new FeatureRow
        {
            Layer1 = Enumerable.Range(0, 32).Select(j => (float)Math.Sin(i * 31 + j)).ToArray(),
            Teacher = Enumerable.Range(0, 3).Select(j => (float)((i + j) % 3)).ToArray(),
            Label = (uint)(i % 3), // ML.NET adds 1 when it reads a key from a row class
        });
        var data = context.Data.LoadFromEnumerable(rows, FeatureRow.Schema());
        var options = new PredictorSetTrainer.Options
        {
            Predictors = [new PredictorSpec(1, Models.Predictors.PredictorArchitecture.FC(16))],
            Epochs = 1, BatchSize = 16, LearningRate = 1e12, Device = "cpu", Seed = 1,
            TeacherLogitsColumnName = nameof(FeatureRow.Teacher), TeacherLabelColumnName = nameof(FeatureRow.Label),
        };
        var error = Assert.Throws<TrainingDivergedException>(() => context.Gati().Predictors(options).Fit(data));
        Assert.Contains("layer 1 FC(16) predictor", error.Message);
    }

    [Fact]
    public void SaveWeights_NonFinite_IsRefused()
    {
        using var network = new ResNet(new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 16, 16), 3, 2));
        using (no_grad()) network.parameters().First().fill_(double.NaN);
        using var writer = new BinaryWriter(new MemoryStream());
        var error = Assert.Throws<InvalidOperationException>(() => ModuleWeights.Write(writer, network));
        Assert.Contains("NaN or infinite", error.Message);
    }

    [Fact]
    public void LoadWeights_NonFinite_IsRefusedWithTheirName()
    {
        var config = new ResNetConfig(ResNetArchitecture.ResNet18, new TensorShape(1, 16, 16), 3, 2);
        using var broken = new ResNet(config);
        // Write past the guard, as an old build or another tool could have: TorchSharp's own format, in our envelope.
        using (no_grad()) broken.get_buffer("bn1.running_var")!.fill_(double.PositiveInfinity);
        using var payload = new MemoryStream();
        using (var payloadWriter = new BinaryWriter(payload, System.Text.Encoding.UTF8, leaveOpen: true)) broken.save(payloadWriter);
        var bytes = payload.ToArray();
        using var envelope = new MemoryStream();
        using (var w = new BinaryWriter(envelope, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            w.Write("GATIWTS1"u8.ToArray());
            w.Write(1);
            w.Write((long)bytes.Length);
            w.Write(System.Security.Cryptography.SHA256.HashData(bytes));
            w.Write(bytes);
        }
        envelope.Position = 0;
        using var target = new ResNet(config);
        var error = Assert.Throws<InvalidDataException>(() => ModuleWeights.Read(new BinaryReader(envelope), target, "test base model"));
        Assert.Contains("bn1.running_var", error.Message);
        Assert.Contains("NaN or infinite", error.Message);
    }

    private sealed class FeatureRow
    {
        public float[] Layer1 { get; set; } = [];
        public float[] Teacher { get; set; } = [];
        public uint Label { get; set; }

        public static SchemaDefinition Schema()
        {
            var schema = SchemaDefinition.Create(typeof(FeatureRow));
            schema[nameof(Layer1)].ColumnType = new Microsoft.ML.Data.VectorDataViewType(Microsoft.ML.Data.NumberDataViewType.Single, 32);
            schema[nameof(Teacher)].ColumnType = new Microsoft.ML.Data.VectorDataViewType(Microsoft.ML.Data.NumberDataViewType.Single, 3);
            schema[nameof(Label)].ColumnType = new Microsoft.ML.Data.KeyDataViewType(typeof(uint), 3);
            return schema;
        }
    }
}
