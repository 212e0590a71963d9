using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gati.MLNet.Models.Selectors;

/// <summary>
/// Decides whether to trust a predictor: reads its log-probabilities [N, k] and returns 2 logits [N, 2]
/// (index 1 = hit). <see cref="HitProbability"/> gives the softmax probability of a hit.
/// </summary>
public sealed class SelectorNetwork : nn.Module<Tensor, Tensor>
{
    private readonly Linear fc1;
    private readonly Linear? fc2;

    /// <summary>Builds an untrained selector.</summary>
    public SelectorNetwork(SelectorArchitecture architecture, int classes) : base("selector")
    {
        ArgumentNullException.ThrowIfNull(architecture);
        architecture.Validate();
        if (classes < 2) throw new ArgumentOutOfRangeException(nameof(classes), classes, "At least 2 classes.");
        Architecture = architecture;
        Classes = classes;
        if (architecture.Hidden == 0)
        {
            fc1 = nn.Linear(classes, 2);
        }
        else
        {
            fc1 = nn.Linear(classes, architecture.Hidden);
            fc2 = nn.Linear(architecture.Hidden, 2);
        }
        RegisterComponents();
    }

    /// <summary>The selector's architecture.</summary>
    public SelectorArchitecture Architecture { get; }

    /// <summary>k, the classes of the predictor it reads.</summary>
    public int Classes { get; }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var x = Inputs(input);
        return fc2 is null ? fc1.forward(x) : fc2.forward(nn.functional.relu(fc1.forward(x)));
    }

    private Tensor Inputs(Tensor logProbabilities) =>
        Architecture.Input == SelectorInput.Sorted ? logProbabilities.sort(1, descending: true).Values : logProbabilities;

    /// <summary>
    /// Data-dependent initialisation of the hidden layer (no-op without one): rescales each hidden unit so that its
    /// pre-activation has mean 0 and standard deviation 1 over <paramref name="predictorLogProbabilities"/>. The
    /// inputs are log-probabilities reaching -50 and beyond, so with the default initialisation most units start
    /// far into or out of their ReLU and the first SGD steps often killed all of them (constant P(hit), a cache
    /// that never exits). Standardised, about half of each unit's rows are active at the start.
    /// </summary>
    internal void StandardizeHiddenLayer(Tensor predictorLogProbabilities)
    {
        if (fc2 is null) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var pre = fc1.forward(Inputs(predictorLogProbabilities));
        var mean = pre.mean([0]);
        using var floor = 1e-6.ToScalar();
        var std = pre.std(0).clamp_min(floor);
        fc1.weight!.div_(std.unsqueeze(1));
        fc1.bias!.sub_(mean).div_(std);
    }

    /// <summary>P(hit) for each row: softmax of the logits, column 1.</summary>
    public Tensor HitProbability(Tensor predictorLogProbabilities) =>
        nn.functional.softmax(forward(predictorLogProbabilities), 1).select(1, 1);
}
