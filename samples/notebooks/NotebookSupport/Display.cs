using System.Globalization;
using System.Net;
using System.Text;

namespace Gati.Notebooks;

/// <summary>HTML tables and PNG charts (ScottPlot) for the notebooks; they return HTML strings to pass to display(HTML(...)).</summary>
public static class Display
{
    /// <summary>An HTML table with a header row.</summary>
    public static string Table(IEnumerable<string> header, IEnumerable<IEnumerable<object>> rows)
    {
        var html = new StringBuilder("<table><thead><tr>");
        foreach (var h in header) html.Append("<th>").Append(WebUtility.HtmlEncode(h)).Append("</th>");
        html.Append("</tr></thead><tbody>");
        foreach (var row in rows)
        {
            html.Append("<tr>");
            foreach (var cell in row)
                html.Append("<td>").Append(WebUtility.HtmlEncode(cell switch
                {
                    double d => d.ToString("0.####", CultureInfo.InvariantCulture),
                    float f => f.ToString("0.####", CultureInfo.InvariantCulture),
                    _ => Convert.ToString(cell, CultureInfo.InvariantCulture),
                })).Append("</td>");
            html.Append("</tr>");
        }
        return html.Append("</tbody></table>").ToString();
    }

    /// <summary>A line chart of one or more series, as an inline PNG.</summary>
    public static string Lines(string title, string xLabel, string yLabel, IReadOnlyDictionary<string, (double[] X, double[] Y)> series)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (name, (x, y)) in series)
        {
            var scatter = plot.Add.Scatter(x, y);
            scatter.LegendText = name;
            scatter.LineWidth = 2;
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        if (series.Count > 1) plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        return Png(plot);
    }

    /// <summary>A bar chart, as an inline PNG.</summary>
    public static string Bars(string title, IReadOnlyList<string> labels, IReadOnlyList<double> values, string yLabel)
    {
        var plot = new ScottPlot.Plot();
        plot.Add.Bars(Enumerable.Range(0, values.Count).Select(i => (double)i).ToArray(), values.ToArray());
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(Enumerable.Range(0, labels.Count).Select(i => (double)i).ToArray(), labels.ToArray());
        plot.Title(title);
        plot.YLabel(yLabel);
        plot.Axes.Margins(bottom: 0);
        return Png(plot);
    }

    private static string Png(ScottPlot.Plot plot) =>
        $"<img src=\"data:image/png;base64,{Convert.ToBase64String(plot.GetImageBytes(720, 420, ScottPlot.ImageFormat.Png))}\"/>";
}
