using System.Globalization;

namespace Gati.Samples.LoadTest;

/// <summary>
/// The histograms of a server's Prometheus endpoint (/metrics) as sums and counts, so that two scrapes around a load
/// test give the mean of each over the test: where a request's time went on the server.
/// </summary>
public sealed class ServerMetrics
{
    private readonly Dictionary<string, (double Sum, double Count)> _histograms;

    private ServerMetrics(Dictionary<string, (double Sum, double Count)> histograms) => _histograms = histograms;

    /// <summary>Reads /metrics; histograms of HTTP requests count only the /predict route.</summary>
    public static async Task<ServerMetrics> ScrapeAsync(HttpClient http, CancellationToken cancellation = default) =>
        Parse(await http.GetStringAsync(new Uri("metrics", UriKind.Relative), cancellation));

    /// <summary>Sums and counts per histogram name (label sets added up), from Prometheus' text format.</summary>
    public static ServerMetrics Parse(string text)
    {
        var histograms = new Dictionary<string, (double Sum, double Count)>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var space = line.LastIndexOf(' ');
            if (space <= 0 || !double.TryParse(line.AsSpan(space + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out var value)) continue;
            var series = line[..space].Trim();
            // Some exporters put a timestamp after the value: then the value is the field before it.
            if (series.LastIndexOf(' ') is var inner and > 0 && !series.EndsWith('}') &&
                double.TryParse(series.AsSpan(inner + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out var before))
            {
                value = before;
                series = series[..inner];
            }
            var brace = series.IndexOf('{');
            var name = brace < 0 ? series : series[..brace];
            var labels = brace < 0 ? "" : series[brace..];
            if (name.StartsWith("http_server_request_duration", StringComparison.Ordinal) && !labels.Contains("http_route=\"/predict\"", StringComparison.Ordinal)) continue;
            var isSum = name.EndsWith("_sum", StringComparison.Ordinal);
            if (!isSum && !name.EndsWith("_count", StringComparison.Ordinal)) continue;
            var key = name[..name.LastIndexOf('_')];
            var (sum, count) = histograms.GetValueOrDefault(key);
            histograms[key] = isSum ? (sum + value, count) : (sum, count + value);
        }
        return new ServerMetrics(histograms);
    }

    /// <summary>
    /// The mean, between <paramref name="before"/> and this scrape, of the histogram whose name starts with
    /// <paramref name="prefix"/> (seconds turned into milliseconds); null when the server has none or it did not move.
    /// </summary>
    public double? MeanSince(ServerMetrics before, string prefix)
    {
        var key = _histograms.Keys.FirstOrDefault(k => k.StartsWith(prefix, StringComparison.Ordinal));
        if (key is null) return null;
        var (sum, count) = _histograms[key];
        var (sum0, count0) = before._histograms.GetValueOrDefault(key);
        if (count - count0 <= 0) return null;
        var mean = (sum - sum0) / (count - count0);
        return key.EndsWith("_seconds", StringComparison.Ordinal) ? mean * 1000 : mean;
    }

    /// <summary>The header of <see cref="Breakdown"/>'s table.</summary>
    public const string BreakdownHeader =
        "| run | client mean ms | server mean ms (/predict) | read body | decode | queue + engine | of which: batch wait (per batch) | engine call (per batch) | inputs per batch | outside the server (client - server) |\n" +
        "|---|---|---|---|---|---|---|---|---|---|";

    /// <summary>One row of the breakdown table: means over the test, ms.</summary>
    public string Breakdown(ServerMetrics before, string label, double clientMeanMs)
    {
        string Cell(double? ms, string format = "F3") => ms is { } v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";
        var server = MeanSince(before, "http_server_request_duration");
        return $"| {label} | {Cell(clientMeanMs)} | {Cell(server)} | {Cell(MeanSince(before, "webapi_request_read"))} | {Cell(MeanSince(before, "webapi_request_decode"))} | " +
            $"{Cell(MeanSince(before, "webapi_request_predict"))} | {Cell(MeanSince(before, "gati_batch_wait"))} | {Cell(MeanSince(before, "gati_prediction_duration"))} | " +
            $"{Cell(MeanSince(before, "gati_batch_size"), "F1")} | {Cell(server is { } s ? clientMeanMs - s : null)} |";
    }
}
