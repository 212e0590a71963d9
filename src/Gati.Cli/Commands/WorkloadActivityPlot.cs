namespace Gati.Cli.Commands;

/// <summary>
/// What each replay of <c>gati bench workload</c> did over the stream, as a PNG: agreement with the base model and mean
/// latency per window of requests, phase boundaries, and when updates were accepted or rejected and when thresholds
/// reacted. The markdown report lists the same events with their reasons; the plot shows how they line up in time.
/// </summary>
internal static class WorkloadActivityPlot
{
    /// <summary>One replay's per-request answers and its events (request number at which each was seen).</summary>
    public sealed record Replay(string Name, double[] Ms, bool[] Agreed, IReadOnlyList<(int Request, bool Accepted)> Updates, IReadOnlyList<int> Reactions,
        IReadOnlyList<int> TrafficChanges);

    /// <summary>Requests per plotted point.</summary>
    public const int Window = 250;

    /// <summary>Writes the plot (atomically) and returns a one-line legend for the report.</summary>
    public static string Write(string path, string title, IReadOnlyList<Replay> replays, int[] phases)
    {
        ArgumentNullException.ThrowIfNull(replays);
        ArgumentNullException.ThrowIfNull(phases);
        if (replays.Count == 0) throw new ArgumentException("Nothing to plot: no replays.", nameof(replays));
        var count = phases.Length;
        if (replays.Any(r => r.Ms.Length != count || r.Agreed.Length != count))
            throw new ArgumentException($"Every replay must hold one answer per request ({count}).", nameof(replays));
        var windows = (count + Window - 1) / Window;
        var plot = new ScottPlot.Plot();
        plot.Title(title);
        plot.Axes.Bottom.Label.Text = "request";
        plot.Axes.Left.Label.Text = $"agreement with the base model, % (per {Window} requests)";
        plot.Axes.Right.Label.Text = "mean latency, ms (dashed)";
        ScottPlot.Color[] colors = [ScottPlot.Colors.Gray, ScottPlot.Colors.SteelBlue, ScottPlot.Colors.DarkOrange, ScottPlot.Colors.Purple];
        var centres = Enumerable.Range(0, windows).Select(w => w * Window + Math.Min(Window, count - w * Window) / 2.0).ToArray();
        for (var k = 0; k < replays.Count; k++)
        {
            var replay = replays[k];
            var color = colors[k % colors.Length];
            var agreement = Enumerable.Range(0, windows).Select(w => Slice(replay.Agreed, w, count).Average(a => a ? 100.0 : 0.0)).ToArray();
            var latency = Enumerable.Range(0, windows).Select(w => Slice(replay.Ms, w, count).Average()).ToArray();
            var line = plot.Add.Scatter(centres, agreement);
            line.Color = color;
            line.LegendText = replay.Name;
            line.MarkerSize = 0;
            var ms = plot.Add.Scatter(centres, latency);
            ms.Color = color.WithAlpha(0.6);
            ms.LinePattern = ScottPlot.LinePattern.Dashed;
            ms.MarkerSize = 0;
            ms.Axes.YAxis = plot.Axes.Right;
            foreach (var (request, accepted) in replay.Updates)
            {
                var marker = plot.Add.Marker(request, 100.6, accepted ? ScottPlot.MarkerShape.FilledTriangleUp : ScottPlot.MarkerShape.Eks, 9,
                    accepted ? ScottPlot.Colors.Green : ScottPlot.Colors.Red);
                marker.Axes.YAxis = plot.Axes.Left;
            }
            foreach (var request in replay.Reactions)
                plot.Add.Marker(request, 100.3 - 0.15 * k, ScottPlot.MarkerShape.FilledCircle, 5, color);
            foreach (var request in replay.TrafficChanges)
                plot.Add.Marker(request, 100.3 - 0.15 * k, ScottPlot.MarkerShape.OpenDiamond, 8, color);
        }
        for (var i = 1; i < count; i++)
        {
            if (phases[i] == phases[i - 1]) continue;
            var boundary = plot.Add.VerticalLine(i);
            boundary.Color = ScottPlot.Colors.Black.WithAlpha(0.35);
            boundary.LinePattern = ScottPlot.LinePattern.Dotted;
        }
        plot.ShowLegend(ScottPlot.Alignment.LowerLeft);
        AtomicFile.Write(path, stream => stream.Write(plot.GetImageBytes(1100, 560, ScottPlot.ImageFormat.Png)));
        return string.Create(CultureInfo.InvariantCulture,
            $"Plot {Path.GetFileName(path)}: agreement (solid, left axis) and mean latency (dashed, right axis) per {Window} requests for each replay; " +
            $"above the lines, updates accepted (green triangles) and rejected (red crosses), threshold reactions (dots in the replay's colour) and changes of traffic seen in the exit mix (open diamonds); dotted lines mark phase changes.");
    }

    private static IEnumerable<T> Slice<T>(T[] values, int window, int count) => values.Skip(window * Window).Take(Math.Min(Window, count - window * Window));
}
