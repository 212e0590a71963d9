using static TorchSharp.torch;

namespace Gati.MLNet.Torch;

/// <summary>Copies a batch's results from TorchSharp tensors into output buffers (the mappers', a base model's features).</summary>
internal static class TensorOutputs
{
    /// <summary>The first <paramref name="count"/> rows of a [N, width] float tensor, row-major, into <paramref name="target"/>.</summary>
    public static void CopyRows(Tensor values, float[] target, int count, int width) =>
        values.cpu().data<float>().CopyTo(target.AsSpan(0, count * width), 0, 0);

    /// <summary>1-based keys (ML.NET's convention) of each row's largest value.</summary>
    public static void ArgmaxKeys(Tensor scores, uint[] target, int count)
    {
        var best = scores.argmax(1).to(ScalarType.Int32).cpu().data<int>();
        for (var i = 0; i < count; i++) target[i] = (uint)best[i] + 1;
    }
}
