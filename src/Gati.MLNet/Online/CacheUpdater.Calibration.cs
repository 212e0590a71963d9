using Gati.MLNet.Policy;

namespace Gati.MLNet.Online;

// The update's thresholds: calibrated jointly on rows the candidate did not train on, for the lowest cost within the target.
internal static partial class CacheUpdater
{
    /// <summary>
    /// Thresholds for all caches together, on calibration rows the candidate did not train on: the caches are served in
    /// order (a row exits at the first whose P(hit) reaches its threshold; rows that exit nowhere get the base answer,
    /// which agrees), and the disagreements of the whole must stay within the most an exact one-sided bound allows: the
    /// Clopper-Pearson upper bound of the disagreement rate at <paramref name="confidence"/> must stay at or below
    /// 1 − <paramref name="target"/>. So the agreement target holds with the stated confidence for the candidate as a
    /// whole, which needs far fewer rows than certifying each cache alone (rows that run everything count as
    /// agreements). Within that budget of disagreements, each threshold, earliest cache first, is first set as low as it
    /// can go; with <paramref name="segmentMs"/> (segment s ends at cache s, the last at the head) the thresholds are
    /// then set for the lowest cost within the same budget (<see cref="LowerCost"/>): the earliest cache taking the
    /// whole budget left later caches, whose exits can cost far fewer disagreements each, almost none, and more rows
    /// ran the whole network.
    /// </summary>
    public static ExitCalibration[] CalibrateJointly(IReadOnlyList<(float[] Probability, bool[] Correct)> caches, double target, double confidence,
        IReadOnlyList<double>? segmentMs = null)
    {
        var rows = caches.Count == 0 ? 0 : caches[0].Probability.Length;
        if (segmentMs is not null && segmentMs.Count != caches.Count + 1)
            throw new ArgumentException($"Expected {caches.Count + 1} segment costs (one per cache, then the head), got {segmentMs.Count}.", nameof(segmentMs));
        var allowed = AgreementBounds.AllowedDisagreements(rows, target, confidence);
        var exitedAt = Enumerable.Repeat(-1, rows).ToArray();
        var disagreements = 0;
        var thresholds = new float[caches.Count];
        for (var i = 0; i < caches.Count; i++)
        {
            var (probability, correct) = caches[i];
            var candidates = Enumerable.Range(0, rows).Where(r => exitedAt[r] < 0).OrderByDescending(r => probability[r]).ToArray();
            thresholds[i] = float.PositiveInfinity;
            var used = 0;
            var taken = 0;
            var chosenTaken = 0;
            var chosenUsed = 0;
            while (taken < candidates.Length)
            {
                var p = probability[candidates[taken]];
                while (taken < candidates.Length && probability[candidates[taken]] == p)
                {
                    if (!correct[candidates[taken]]) used++;
                    taken++;
                }
                if (disagreements + used > allowed) break;
                thresholds[i] = p;
                chosenTaken = taken;
                chosenUsed = used;
            }
            for (var j = 0; j < chosenTaken; j++) exitedAt[candidates[j]] = i;
            disagreements += chosenUsed;
        }
        if (segmentMs is not null && rows > 0)
        {
            LowerCost(caches, thresholds, segmentMs, allowed);
            exitedAt = Serve(caches, thresholds).Exit.ToArray();
        }
        return caches.Select((cache, i) =>
        {
            var exits = Enumerable.Range(0, rows).Where(r => exitedAt[r] == i).ToArray();
            var right = exits.Count(r => cache.Correct[r]);
            var totalCorrect = cache.Correct.Count(c => c);
            return new ExitCalibration(thresholds[i], exits.Length == 0 ? double.NaN : (double)right / exits.Length, totalCorrect == 0 ? 0 : (double)right / totalCorrect,
                rows == 0 ? 0 : (double)exits.Length / rows, rows, rows == 0 ? 0 : (double)totalCorrect / rows) { CorrectRows = totalCorrect };
        }).ToArray();
    }

    /// <summary>The calibration rows served with <paramref name="thresholds"/> (<see cref="ExitSimulation"/>).</summary>
    private static ExitOutcomes Serve(IReadOnlyList<(float[] Probability, bool[] Correct)> caches, float[] thresholds) =>
        ExitSimulation.Serve(caches.Select(c => c.Probability).ToArray(), thresholds, caches.Select(c => c.Correct).ToArray());

    /// <summary>
    /// Lowers the mean cost of serving the rows within <paramref name="allowed"/> disagreements, from the greedy
    /// thresholds. A move of one threshold alone cannot trade the first cache's exits for the later ones' (raising it
    /// only sends rows to the whole network), so for each price λ of a disagreement (in ms, on a geometric scale) the
    /// thresholds first minimise cost + λ · disagreements one cache at a time until none moves, which sets how the
    /// caches share the rows; then, within the budget, the one move of a single threshold that saves the most is made
    /// until none saves anything, which spends what the price left of the budget. Each move is exact (a sweep over the
    /// cache's own P(hit) values). The cheapest outcome within the budget is kept, the greedy one if none is cheaper.
    /// </summary>
    private static void LowerCost(IReadOnlyList<(float[] Probability, bool[] Correct)> caches, float[] thresholds, IReadOnlyList<double> segmentMs, int allowed)
    {
        var n = caches.Count;
        var rows = caches[0].Probability.Length;
        var reach = ReachMs(segmentMs, n);
        (double Cost, int Wrong) Serve(float[] t)
        {
            var served = CacheUpdater.Serve(caches, t);
            double cost = 0;
            foreach (var exit in served.Exit) cost += exit == ExitSimulation.FullModel ? reach[n] : reach[exit];
            return (cost, served.Rows - served.Agreed);
        }
        var order = new int[rows];
        var otherCost = new double[rows];
        var otherWrong = new bool[rows];
        // The best level for cache i with the others fixed, and the change in cost it brings: with a price, minimising
        // cost + price * disagreements; without (price 0), minimising cost within the budget.
        (float Level, double CostChange) Best(float[] t, int i, double price)
        {
            var m = 0;
            var fixedWrong = 0;
            for (var r = 0; r < rows; r++)
            {
                var exit = -1;
                for (var j = 0; j < i && exit < 0; j++) if (ExitSimulation.Fires(caches[j].Probability[r], t[j])) exit = j;
                if (exit >= 0)
                {
                    if (!caches[exit].Correct[r]) fixedWrong++;
                    continue;
                }
                for (var j = i + 1; j < n && exit < 0; j++) if (ExitSimulation.Fires(caches[j].Probability[r], t[j])) exit = j;
                otherCost[r] = exit < 0 ? reach[n] : reach[exit];
                otherWrong[r] = exit >= 0 && !caches[exit].Correct[r];
                if (otherWrong[r]) fixedWrong++;
                order[m++] = r;
            }
            var (probability, correct) = caches[i];
            Array.Sort(order, 0, m, Comparer<int>.Create((x, y) => probability[y].CompareTo(probability[x])));
            // Relative to cache i letting every row pass; the current level's own figures come out of the same sweep.
            float choice = float.PositiveInfinity;
            double cost = 0, bestObjective = 0, bestCost = 0, currentCost = 0;
            var wrong = 0;
            var budget = price > 0 ? int.MaxValue : allowed - fixedWrong;
            for (var k = 0; k < m;)
            {
                var level = probability[order[k]];
                while (k < m && probability[order[k]] == level)
                {
                    var r = order[k++];
                    cost += reach[i] - otherCost[r];
                    wrong += (correct[r] ? 0 : 1) - (otherWrong[r] ? 1 : 0);
                }
                if (ExitSimulation.Fires(level, t[i])) currentCost = cost;
                var objective = cost + price * wrong;
                if (wrong <= budget && objective < bestObjective - 1e-12)
                {
                    bestObjective = objective;
                    bestCost = cost;
                    choice = level;
                }
            }
            return (choice, bestCost - currentCost);
        }
        var best = (float[])thresholds.Clone();
        var (bestTotal, _) = Serve(best);
        var trial = (float[])thresholds.Clone();
        for (var price = 0.01 * reach[n]; price <= 1000 * reach[n]; price *= 1.5)
        {
            for (var round = 0; round < 8; round++)
            {
                var moved = false;
                for (var i = 0; i < n; i++)
                {
                    var (level, _) = Best(trial, i, price);
                    moved |= level != trial[i];
                    trial[i] = level;
                }
                if (!moved) break;
            }
            var (cost, wrong) = Serve(trial);
            if (wrong > allowed) continue;
            var polished = (float[])trial.Clone();
            for (var move = 0; move < 4 * n; move++)
            {
                var chosen = -1;
                var (level, saving) = (0f, -1e-9);
                for (var i = 0; i < n; i++)
                {
                    var (l, deltaCost) = Best(polished, i, 0);
                    if (deltaCost < saving)
                    {
                        (chosen, level, saving) = (i, l, deltaCost);
                    }
                }
                if (chosen < 0) break;
                polished[chosen] = level;
                (cost, wrong) = Serve(polished);
            }
            if (wrong <= allowed && cost < bestTotal - 1e-9)
            {
                bestTotal = cost;
                polished.CopyTo(best, 0);
            }
        }
        best.CopyTo(thresholds, 0);
    }

    /// <summary>
    /// What a row costs that stops at segment s: the sum of <paramref name="segmentMs"/>[0..s] (segment s ends at cache s;
    /// index <paramref name="caches"/> is the head, a full run).
    /// </summary>
    private static double[] ReachMs(IReadOnlyList<double> segmentMs, int caches)
    {
        var reach = new double[caches + 1];
        for (var s = 0; s <= caches; s++) reach[s] = (s == 0 ? 0 : reach[s - 1]) + segmentMs[s];
        return reach;
    }
}
