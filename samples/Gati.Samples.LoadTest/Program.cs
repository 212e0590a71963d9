// Usage: Gati.Samples.LoadTest --url http://127.0.0.1:5080 [--requests 5000 | --minutes M] [--clients 16] [--payload png|json]
//                              [--retry-refused] [--retry-unanswered] [--server-pid PID] [--data-dir DIR] [--label NAME] [--output FILE] [--breakdown FILE]
using System.Globalization;
using Gati.Samples.LoadTest;

const string Usage = "usage: Gati.Samples.LoadTest --url http://127.0.0.1:5080 [--requests 5000 | --minutes M] [--clients 16] [--payload png|json] [--retry-refused] [--retry-unanswered] [--server-pid PID] [--data-dir DIR] [--label NAME] [--output FILE] [--breakdown FILE]";
var options = args.Select((a, i) => (a, i)).Where(p => p.a.StartsWith("--", StringComparison.Ordinal))
    .ToDictionary(p => p.a[2..], p => p.i + 1 < args.Length ? args[p.i + 1] : "");
if (!options.TryGetValue("url", out var url))
{
    Console.Error.WriteLine(Usage);
    return 2;
}
int Int(string name, int fallback) => options.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
// --minutes: a timed run (e.g. a soak); the request count is then only a bound.
using var timer = options.TryGetValue("minutes", out var minutes)
    ? new CancellationTokenSource(TimeSpan.FromMinutes(double.Parse(minutes, CultureInfo.InvariantCulture)))
    : new CancellationTokenSource();
var settings = new LoadTestSettings(new Uri(url.EndsWith('/') ? url : url + "/"), Int("requests", options.ContainsKey("minutes") ? int.MaxValue : 5000), Int("clients", 16),
    options.GetValueOrDefault("payload", "png"), options.ContainsKey("server-pid") ? Int("server-pid", 0) : null, options.GetValueOrDefault("data-dir"))
{
    Stop = timer.Token,
    RetryRefused = options.ContainsKey("retry-refused"),
    RetryUnanswered = options.ContainsKey("retry-unanswered"),
};
// --breakdown FILE: scrape the server's /metrics before and after, and append where the time went to FILE.
ServerMetrics? before = null;
using var metricsClient = new HttpClient { BaseAddress = settings.Url };
if (options.ContainsKey("breakdown")) before = await ServerMetrics.ScrapeAsync(metricsClient);
var result = await LoadTest.RunAsync(settings);
var line = result.ToMarkdown(options.GetValueOrDefault("label", $"{settings.Payload}, {settings.Clients} clients"));
Console.WriteLine(LoadTestResult.MarkdownHeader);
Console.WriteLine(line);
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"status codes: {string.Join(", ", result.StatusCodes.Select(c => $"{c.Key}: {c.Value}"))}; refused and retried: {result.Refused}; unanswered and retried: {result.Unanswered}; {result.Seconds:F1} s"));
if (result.FailureReasons.Count > 0)
    Console.WriteLine($"failure reasons: {string.Join("; ", result.FailureReasons.Select(r => $"{r.Key} ({r.Value})"))}");
if (result.FailureTimes.Count > 0)
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"failed requests started at (s): {string.Join(", ", result.FailureTimes.Select(t => t.ToString("F1", CultureInfo.InvariantCulture)))}"));
if (options.TryGetValue("output", out var output)) File.AppendAllText(output, line + Environment.NewLine);
if (before is not null)
{
    var breakdown = (await ServerMetrics.ScrapeAsync(metricsClient)).Breakdown(before, options.GetValueOrDefault("label", settings.Payload), result.MeanMs);
    Console.WriteLine(ServerMetrics.BreakdownHeader);
    Console.WriteLine(breakdown);
    File.AppendAllText(options["breakdown"], breakdown + Environment.NewLine);
}
return result.Errors == 0 ? 0 : 1;
