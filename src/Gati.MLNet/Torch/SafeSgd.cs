using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gati.MLNet.Torch;

/// <summary>
/// Stochastic gradient descent with momentum and weight decay — PyTorch's and TorchSharp's <c>SGD</c> update with
/// the same options and state layout (training checkpoints written with TorchSharp's SGD resume into it) — whose step
/// keeps every <see cref="Scalar"/> reachable for the whole native call. TorchSharp 0.107's own step converts its
/// learning rate, momentum and weight decay to Scalars implicitly, which a concurrent garbage collection can free
/// while libtorch still reads them (see <see cref="Scalars"/>). Unlike PyTorch's, the step adds the weight decay to each
/// parameter's gradient in place (the update is the same to the bit).
/// </summary>
public sealed class SafeSgd : SGD
{
    /// <summary>One parameter group with the given options (no dampening, no Nesterov momentum).</summary>
    public SafeSgd(IEnumerable<Parameter> parameters, double learningRate, double momentum = 0, double weightDecay = 0)
        : base(parameters, learningRate, momentum, dampening: 0, weight_decay: weightDecay)
    {
    }

    /// <summary>Several parameter groups, each with its own learning rate and the same momentum and weight decay.</summary>
    public SafeSgd(IEnumerable<(IEnumerable<Parameter> Parameters, double LearningRate)> groups, double momentum = 0, double weightDecay = 0)
        : base(groups.Select(g => new ParamGroup(g.Parameters, g.LearningRate, momentum, dampening: 0, weight_decay: weightDecay, nesterov: false, maximize: false)),
            0, momentum, dampening: 0, weight_decay: weightDecay)
    {
    }

    /// <inheritdoc />
    public override Tensor step(Func<Tensor>? closure = null) => _step<ParamGroup>(group =>
    {
        var options = group.Options;
        var momentum = options.momentum!.Value;
        var weightDecay = options.weight_decay!.Value;
        var nesterov = options.nesterov!.Value;
        var rate = options.LearningRate!.Value;
        using var decayScalar = weightDecay.ToScalar();
        using var momentumScalar = momentum.ToScalar();
        using var undampedScalar = (1 - options.dampening!.Value).ToScalar();
        using var stepScalar = (options.maximize!.Value ? rate : -rate).ToScalar();
        foreach (var parameter in group.Parameters)
        {
            var gradient = parameter.grad;
            if (gradient is null) continue;
            // In place: the same values as PyTorch's out-of-place grad.add(param, wd), without allocating (and the kernel
            // mapping and zeroing) a parameter-sized tensor every step — 200 MB for the FC predictor of a ResNet-50's
            // first stage. The gradient is zeroed before the next backward, so nothing else reads it.
            if (weightDecay != 0) gradient = gradient.add_(parameter, decayScalar);
            if (momentum != 0)
            {
                var state = (State)_state[parameter.Handle];
                if (state.momentum_buffer is null)
                    state.momentum_buffer = gradient.clone().detach().DetachFromDisposeScope();
                else
                    state.momentum_buffer.mul_(momentumScalar).add_(gradient, undampedScalar);
                gradient = nesterov ? gradient.add(state.momentum_buffer, momentumScalar) : state.momentum_buffer;
            }
            parameter.add_(gradient, stepScalar);
        }
    }, closure);
}
