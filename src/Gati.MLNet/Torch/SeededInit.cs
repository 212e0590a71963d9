namespace Gati.MLNet.Torch;

/// <summary>
/// Reproducible network initialisation. TorchSharp modules draw their initial weights from libtorch's process-wide
/// generator, so "seed, then construct" is only reproducible when no other thread seeds or draws in between
/// (trainers running side by side in one process, e.g. a web app or a parallel test run). Every trainer builds its
/// networks through <see cref="Create{T}"/>, which holds one process-wide lock for the seed and the construction;
/// model loading constructs (and then overwrites) its networks under the same lock through <see cref="Unseeded{T}"/>.
/// Code outside the library that draws from libtorch's generator at the same time can still disturb a seeded run.
/// </summary>
internal static class SeededInit
{
    private static readonly Lock Gate = new();

    /// <summary>Seeds libtorch's generator with <paramref name="seed"/> and runs <paramref name="create"/>, with no other seeded construction in between.</summary>
    public static T Create<T>(int seed, Func<T> create)
    {
        lock (Gate)
        {
            TorchSharp.torch.manual_seed(seed);
            return create();
        }
    }

    /// <summary>Runs <paramref name="create"/> (whose random draws do not matter) without interleaving with a seeded construction.</summary>
    public static T Unseeded<T>(Func<T> create)
    {
        lock (Gate) return create();
    }
}
