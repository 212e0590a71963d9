using Gati.MLNet.Training;

namespace Gati.MLNet.Tests;

public sealed class PredictorTrainingOptionsTests
{
    [Fact]
    public void CopySettingsTo_EverySharedSetting_ReachesTheSetTrainer()
    {
        using var cancellation = new CancellationTokenSource();
        var recipe = new LearnedCachesEstimator.PredictorOptions
        {
            TeacherLogitsColumnName = "L", TeacherLabelColumnName = "Y", Alpha = 0.25, Temperature = 3, Epochs = 7, Patience = 2,
            BatchSize = 17, LearningRate = 0.01, Momentum = 0.5, WeightDecay = 1e-3, InputStepBound = null, StandardizeInputs = false,
            InitializeFromBaseHead = false, LearningRateHalvingEpochs = 3, Seed = 9, Device = "cpu", ProgressInterval = 5,
            ShufflePoolSize = 99, ShufflePoolBytes = 1 << 20, InferenceBatchSize = 13, CheckpointPath = "/tmp/x.ckpt", Resume = true,
            CancellationToken = cancellation.Token,
        };
        var copy = recipe.CopySettingsTo(new PredictorSetTrainer.Options());
        // The settings a hand-written copy dropped before (momentum, weight decay, inference batch size) are among them.
        Assert.Equal((0.5, 1e-3, 13, 99, 1L << 20), (copy.Momentum, copy.WeightDecay, copy.InferenceBatchSize, copy.ShufflePoolSize, copy.ShufflePoolBytes));
        Assert.Equal(cancellation.Token, copy.CancellationToken);
        // Every setting declared on the shared base, public or internal, whatever is added later.
        Assert.Contains(PredictorTrainingOptions.SharedSettings, p => p.Name == "KnownBaseNetwork");
        foreach (var property in PredictorTrainingOptions.SharedSettings)
            Assert.Equal(property.GetValue(recipe), property.GetValue(copy));
        Assert.True(PredictorTrainingOptions.SharedSettings.Count >= 25, $"{PredictorTrainingOptions.SharedSettings.Count} settings found");
    }
}
