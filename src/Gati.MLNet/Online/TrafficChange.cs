namespace Gati.MLNet.Online;

/// <summary>
/// A change of traffic the shadow sampler saw in where sampled requests exit (docs/online.md, "Changes of traffic"): from
/// then on, the requests since the change are judged on their own, as well as in the live window.
/// </summary>
/// <param name="Request">Requests served by the engines watched when the change was seen.</param>
/// <param name="BeganAtSample">Place in the uniform sample of the first request judged as after the change.</param>
/// <param name="SeenAtSample">Place of the sampled request that showed it.</param>
/// <param name="Distance">Total variation distance between the exit mix of the newest sampled requests and the one before.</param>
public sealed record TrafficChange(long Request, long BeganAtSample, long SeenAtSample, double Distance);
