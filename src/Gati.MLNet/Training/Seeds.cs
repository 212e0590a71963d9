namespace Gati.MLNet.Training;

/// <summary>
/// Derived seeds (e.g. one shuffle seed per epoch) that are the same in every process. <see cref="HashCode"/> is
/// randomised per process, so it must never feed a <see cref="Random"/> that should make a run reproducible.
/// </summary>
internal static class Seeds
{
    /// <summary>A well-mixed 32-bit seed from a base seed, an index (e.g. the epoch) and a purpose tag (SplitMix64 finaliser).</summary>
    public static int Derive(int seed, int index, int purpose)
    {
        unchecked
        {
            var z = ((ulong)(uint)seed << 32 | (uint)index) ^ (ulong)(uint)purpose * 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            return (int)(z ^ (z >> 32));
        }
    }
}
