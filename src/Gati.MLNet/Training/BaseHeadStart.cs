using System.Globalization;
using Gati.MLNet.Models;
using Gati.MLNet.Models.Predictors;
using Gati.MLNet.Transforms;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>
/// <see cref="PredictorTrainingOptions.InitializeFromBaseHead"/>: FC and Pool predictors on layers whose channels are
/// the ones the base model's head averages start as that head.
/// </summary>
/// <remarks>
/// On the base model's last layer the head is inside the FC and Pool function classes, yet predictors trained from a
/// random start by distillation stopped 0.5-1 point short of agreeing with it everywhere (docs/predictors.md); starting
/// from the head itself, with the start kept unless training beats it on held-out rows, closes that gap by
/// construction. On the other layers of the last stage the head is a warm start that training refines.
/// </remarks>
internal static class BaseHeadStart
{
    /// <summary>Applies the head where it fits (networks still on the CPU); true for each network that now computes it.</summary>
    public static bool[] Apply(IHost host, IDataView input, PredictorTrainingOptions options, IReadOnlyList<PredictorSpec> specs,
        IReadOnlyList<PredictorNetwork> networks)
    {
        var started = new bool[specs.Count];
        if (!options.InitializeFromBaseHead) return started;
        using var channel = host.Start("Base-head start");
        var baseNetwork = options.BaseModel is IBaseModelHolder model ? model.Base : options.KnownBaseNetwork ?? BaseModelLocator.Find(input);
        if (baseNetwork is null)
        {
            channel.Info("No base model known (pass PredictorTrainingOptions.BaseModel with a feature dump): every predictor starts from random weights.");
            return started;
        }
        if (baseNetwork.Model.LinearHead is not var (headWeight, headBias))
        {
            channel.Info($"{baseNetwork.Model.Description} does not end in a global average and one linear layer: every predictor starts from random weights.");
            return started;
        }
        var classes = headBias.Length;
        var channels = headWeight.Length / classes;
        using var scope = NewDisposeScope();
        var weight = tensor(headWeight, [classes, channels]);
        var bias = tensor(headBias, [classes]);
        for (var i = 0; i < specs.Count; i++)
        {
            var layer = specs[i].Layer;
            if (layer > baseNetwork.Model.CutPoints.Count) continue;
            var shape = baseNetwork.Model.CutPoint(layer).Shape;
            if (shape.Channels != channels || specs[i].Architecture.Kind == PredictorKind.Conv) continue;
            // A predictor trained on reduced features starts from the head on the features it reads.
            var reads = specs[i].Architecture.Reduction.Kind == FeatureReductionKind.Grid && networks[i].FeatureShape is { } reduced ? reduced : shape;
            if (reads.Size != networks[i].InputSize)
            {
                channel.Info($"{specs[i]} reads {networks[i].InputSize} pre-pooled values, not the cut point's {shape}: it starts from random weights.");
                continue;
            }
            var reason = networks[i].InitializeAsHead(weight, bias, reads);
            started[i] = reason is null;
            if (reason is not null) channel.Info($"{specs[i]} starts from random weights: {reason}.");
        }
        return started;
    }

    /// <summary>The checkpoint setting naming the predictors that started as the head (absent when none did).</summary>
    public static string? Setting(IReadOnlyList<PredictorSpec> specs, bool[] started) =>
        started.Any(s => s)
            ? string.Join("; ", specs.Where((_, i) => started[i]).Select(s => string.Create(CultureInfo.InvariantCulture, $"{s.Layer}:{s.Architecture.Id}")))
            : null;
}
