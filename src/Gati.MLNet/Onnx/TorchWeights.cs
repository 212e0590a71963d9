using static TorchSharp.torch;

namespace Gati.MLNet.Onnx;

/// <summary>Reads a TorchSharp module's parameters and buffers by their PyTorch state_dict names, as float arrays.</summary>
internal sealed class TorchWeights
{
    private readonly Dictionary<string, Tensor> _state;
    private readonly string _what;

    public TorchWeights(nn.Module module, string what)
    {
        _state = module.state_dict();
        _what = what;
    }

    public bool Contains(string name) => _state.ContainsKey(name);

    /// <summary>The values of <paramref name="name"/> (row-major) and its shape.</summary>
    public float[] Get(string name, out long[] shape)
    {
        if (!_state.TryGetValue(name, out var tensor))
            throw new InvalidOperationException($"The {_what} has no '{name}' to export.");
        shape = tensor.shape;
        using var scope = NewDisposeScope();
        return tensor.detach().cpu().to(ScalarType.Float32).contiguous().data<float>().ToArray();
    }

    public float[] Get(string name) => Get(name, out _);
}
