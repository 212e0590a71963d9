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
        var x = Architecture.Input == SelectorInput.Sorted ? input.sort(1, descending: true).Values : input;
        return fc2 is null ? fc1.forward(x) : fc2.forward(nn.functional.relu(fc1.forward(x)));
    }

    /// <summary>P(hit) for each row: softmax of the logits, column 1.</summary>
    public Tensor HitProbability(Tensor predictorLogProbabilities) =>
        nn.functional.softmax(forward(predictorLogProbabilities), 1).select(1, 1);
}
