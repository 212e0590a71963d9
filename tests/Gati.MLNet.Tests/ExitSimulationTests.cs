using Gati.MLNet.Policy;

namespace Gati.MLNet.Tests;

/// <summary>The exit simulator on hand-made tables whose outcomes are worked out in the comments.</summary>
public sealed class ExitSimulationTests
{
    [Fact]
    public void ExitOf_FirstCacheInPlanOrderWhoseSelectorFires()
    {
        float[] thresholds = [0.9f, 0.5f, 0.1f];
        Assert.Equal(1, ExitSimulation.ExitOf([0.8f, 0.6f, 0.99f], thresholds)); // the second fires first
        Assert.Equal(0, ExitSimulation.ExitOf([0.9f, 0.6f, 0.99f], thresholds)); // at the threshold exits
        Assert.Equal(ExitSimulation.FullModel, ExitSimulation.ExitOf([0.1f, 0.2f, 0.05f], thresholds));
        Assert.Equal(ExitSimulation.FullModel, ExitSimulation.ExitOf([float.NaN, 1f, 1f], [0f, float.PositiveInfinity, float.PositiveInfinity]));
    }

    [Fact]
    public void Serve_CountsAgreementExitsAndDisagreementsPerCache()
    {
        // Rows:            0      1      2      3      4
        float[] first =  [0.95f, 0.20f, 0.91f, 0.10f, 0.30f];
        float[] second = [0.99f, 0.70f, 0.10f, 0.40f, 0.80f];
        bool[] firstAgrees = [true, true, false, true, true];
        bool[] secondAgrees = [false, true, true, true, false];
        var served = ExitSimulation.Serve([first, second], [0.9f, 0.6f], [firstAgrees, secondAgrees]);
        // Row 0 and 2 exit at the first cache (2 disagrees), 1 and 4 at the second (4 disagrees), 3 runs the full model.
        Assert.Equal([0, 1, 0, ExitSimulation.FullModel, 1], served.Exit);
        Assert.Equal([true, true, false, true, false], served.RowAgreed);
        Assert.Equal(3, served.Agreed);
        Assert.Equal(4, served.EarlyExits);
        Assert.Equal([2, 2], served.Exits);
        Assert.Equal([1, 1], served.Disagreements);
        Assert.Equal(0.6, served.Agreement, 12);
    }

    [Fact]
    public void Serve_DecisionsAndProbabilitiesAndRecords_GiveTheSameOutcomes()
    {
        var random = new Random(7);
        const int Rows = 300;
        var probabilities = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, Rows).Select(_ => random.NextSingle()).ToArray()).ToArray();
        var agrees = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, Rows).Select(_ => random.NextDouble() < 0.9).ToArray()).ToArray();
        float[] thresholds = [0.8f, 0.6f, 0.7f];
        var decisions = probabilities.Select((p, c) => p.Select(x => ExitSimulation.Fires(x, thresholds[c])).ToArray()).ToArray();
        var fromProbabilities = ExitSimulation.Serve(probabilities, thresholds, agrees);
        var fromDecisions = ExitSimulation.Serve(decisions, agrees);
        var fromRecords = ExitSimulation.Serve(Enumerable.Range(0, Rows).ToArray(), 3,
            r => ExitSimulation.ExitOf(probabilities.Select(p => p[r]).ToArray(), thresholds), (r, c) => agrees[c][r]);
        foreach (var other in new[] { fromDecisions, fromRecords })
        {
            Assert.Equal(fromProbabilities.Exit, other.Exit);
            Assert.Equal(fromProbabilities.RowAgreed, other.RowAgreed);
            Assert.Equal(fromProbabilities.Disagreements, other.Disagreements);
        }
        // Independent count: a row agrees unless the first cache over its threshold disagrees on it.
        var expected = Enumerable.Range(0, Rows).Count(r =>
        {
            for (var c = 0; c < 3; c++) if (probabilities[c][r] >= thresholds[c]) return agrees[c][r];
            return true;
        });
        Assert.Equal(expected, fromProbabilities.Agreed);
    }

    [Fact]
    public void Serve_NoCaches_EveryRowRunsTheFullModel()
    {
        var served = ExitSimulation.Serve(Enumerable.Range(0, 4).ToArray(), 0, _ => ExitSimulation.FullModel, (_, _) => false);
        Assert.Equal(4, served.Agreed);
        Assert.Equal(0, served.EarlyExits);
    }
}
