namespace Gati.MLNet.Online;

/// <summary>How a set of caches would have served some rows: agreement and expected cost.</summary>
/// <param name="Rows">Rows served.</param>
/// <param name="Agreed">Of those, answers equal to the base model's.</param>
/// <param name="Lower">Lower confidence bound of agreement.</param>
/// <param name="Upper">Upper confidence bound of agreement.</param>
/// <param name="ExpectedMs">Mean cost per row from the per-segment timings.</param>
/// <param name="ExitShare">Share of rows per exit (caches in order, then the whole network).</param>
/// <param name="Outcomes">Per row: the cache it exits at (-1: the whole network) and whether its answer agrees.</param>
internal sealed record SimulatedServing(int Rows, int Agreed, double Lower, double Upper, double ExpectedMs, double[] ExitShare, (int Exit, bool Agreed)[] Outcomes)
{
    public double Agreement => Rows == 0 ? double.NaN : (double)Agreed / Rows;
}
