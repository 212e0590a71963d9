using Gati.MLNet.Inference;

namespace Gati.MLNet.Online;

/// <summary>A candidate set of caches from one update, with what it was trained and calibrated on.</summary>
internal sealed record UpdateCandidate(LearnedCache[] Caches, int TrainRows, int CalibrationRows, long TrainedThrough, string Summary);
