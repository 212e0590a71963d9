using Gati.MLNet.Models;
using Microsoft.ML.OnnxRuntime;

namespace Gati.MLNet.Inference.Backends;

/// <summary>
/// What each cache saw during one call of the tapped single graph (<see cref="EarlyExitSingleGraph"/>): its cut point's
/// value, P(hit) and log-probabilities, for the caches the request reached. Valid until disposed.
/// </summary>
internal sealed class SingleGraphTaps : IDisposable
{
    private readonly IDisposableReadOnlyCollection<OrtValue> _outputs;

    /// <param name="outputs">The tapped graph's outputs in <see cref="OutputNames"/>' order (taken over: disposed with this).</param>
    /// <param name="caches">Number of caches.</param>
    internal SingleGraphTaps(IDisposableReadOnlyCollection<OrtValue> outputs, int caches)
    {
        if (outputs.Count != 2 + 3 * caches)
        {
            outputs.Dispose();
            throw new InvalidOperationException($"The tapped single graph gave {outputs.Count} outputs; {caches} caches need {2 + 3 * caches}.");
        }
        _outputs = outputs;
        Caches = caches;
        // Empty outputs (caches not reached) may have no data to view: known once, from each output's shape.
        _empty = outputs.Select(v => v.GetTensorTypeAndShape().ElementCount == 0).ToArray();
    }

    private readonly bool[] _empty;

    /// <summary>The tapped graph's outputs: the answer (probabilities, exit), then per cache its activation, P(hit), log-probabilities.</summary>
    internal static string[] OutputNames(int caches) =>
    [
        OnnxSegment.Probabilities, EarlyExitSingleGraph.Exit,
        .. Enumerable.Range(0, caches).SelectMany(i => new[] { EarlyExitSingleGraph.Activation(i), EarlyExitSingleGraph.HitProbability(i), EarlyExitSingleGraph.LogProbabilities(i) }),
    ];

    public int Caches { get; }

    /// <summary>Copies the answer's probabilities to <paramref name="probabilities"/>; <paramref name="exit"/>: the cache that answered, or the number of caches.</summary>
    internal void Answer(Span<float> probabilities, out int exit)
    {
        _outputs[0].GetTensorDataAsSpan<float>().CopyTo(probabilities);
        exit = (int)_outputs[1].GetTensorDataAsSpan<long>()[0];
    }

    /// <summary>Whether the request got as far as cache <paramref name="cache"/> (in layer order).</summary>
    public bool Reached(int cache) => !Value(cache, 1).IsEmpty;

    /// <summary>Cache <paramref name="cache"/>'s input (its cut point's value, C*H*W); empty where it was not reached.</summary>
    public ReadOnlySpan<float> Activation(int cache) => Value(cache, 0);

    /// <summary>The selector's P(hit) at cache <paramref name="cache"/>; NaN where it was not reached.</summary>
    public float HitProbability(int cache) => Value(cache, 1) is { IsEmpty: false } p ? p[0] : float.NaN;

    /// <summary>The predictor's log-probabilities at cache <paramref name="cache"/> (k values); empty where it was not reached.</summary>
    public ReadOnlySpan<float> LogProbabilities(int cache) => Value(cache, 2);

    private ReadOnlySpan<float> Value(int cache, int which)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(cache);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(cache, Caches);
        var index = 2 + 3 * cache + which;
        return _empty[index] ? [] : _outputs[index].GetTensorDataAsSpan<float>();
    }

    public void Dispose() => _outputs.Dispose();
}
