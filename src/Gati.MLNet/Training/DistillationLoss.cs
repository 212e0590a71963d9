using Gati.MLNet.Torch;
using static TorchSharp.torch;

namespace Gati.MLNet.Training;

/// <summary>
/// The reference's knowledge-distillation loss for predictors:
/// <c>KL(softmax(teacher / T) || softmax(student / T)) * alpha * T^2 + CE(student, hardLabel) * (1 - alpha)</c>,
/// where the student is the predictor's output (log-probabilities), the teacher the base model's logits and the
/// hard label the base model's predicted class. As in the reference (PyTorch's <c>KLDivLoss</c> with its default
/// reduction), the KL term is averaged over every element, batch x classes, i.e. the per-sample KL divided by k;
/// CE is averaged over the batch. (With the per-sample KL instead, the T² = 36 factor makes the reference's
/// learning rate of 0.05 unstable.)
/// </summary>
public static class DistillationLoss
{
    /// <summary>The loss of a batch, as a scalar tensor.</summary>
    /// <param name="student">Predictor outputs [N, k] (log-probabilities or logits).</param>
    /// <param name="teacherLogits">Base-model logits [N, k].</param>
    /// <param name="hardLabels">Base-model predicted classes [N] (0-based, int64).</param>
    /// <param name="alpha">Weight of the soft (KL) term; 1 - alpha weighs the hard (CE) term.</param>
    /// <param name="temperature">Softening temperature T (> 0).</param>
    public static Tensor Compute(Tensor student, Tensor teacherLogits, Tensor hardLabels, double alpha, double temperature)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacherLogits);
        ArgumentNullException.ThrowIfNull(hardLabels);
        if (alpha is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "Alpha must be in [0, 1].");
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "Temperature must be positive.");
        // Explicit Scalars only: an implicitly converted one can be freed mid-call (see Scalars).
        var studentLog = nn.functional.log_softmax(student.DividedBy(temperature), 1);
        var teacherLog = nn.functional.log_softmax(teacherLogits.DividedBy(temperature), 1);
        var kl = teacherLog.exp().mul(teacherLog - studentLog).mean();
        var ce = nn.functional.cross_entropy(student, hardLabels);
        return kl.Times(alpha * temperature * temperature).PlusScaled(ce, 1 - alpha);
    }
}
