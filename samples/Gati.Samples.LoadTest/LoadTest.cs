using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using Gati.MLNet;
using Gati.MLNet.Data;
using Microsoft.ML;
using Microsoft.ML.Data;
using SkiaSharp;

namespace Gati.Samples.LoadTest;

/// <summary>Settings of one load test.</summary>
/// <param name="Url">The server's base address, e.g. http://127.0.0.1:5080.</param>
/// <param name="Requests">Requests in total (with <see cref="Stop"/>: at most).</param>
/// <param name="Clients">Concurrent clients (each sends its share one request at a time).</param>
/// <param name="Payload">png or json.</param>
/// <param name="ServerPid">The server's process id, to read its resident memory before and after (optional).</param>
/// <param name="FashionMnistDirectory">Where the test images come from.</param>
public sealed record LoadTestSettings(Uri Url, int Requests, int Clients, string Payload = "png", int? ServerPid = null, string? FashionMnistDirectory = null)
{
    /// <summary>Once cancelled, clients start no new request (the run then ends before <see cref="Requests"/>).</summary>
    public CancellationToken Stop { get; init; }

    /// <summary>
    /// Retry a request whose connection is refused (a server restarting) after a short pause instead of failing it; the
    /// retries are counted in <see cref="LoadTestResult.Refused"/>.
    /// </summary>
    public bool RetryRefused { get; init; }

    /// <summary>
    /// Retry, at most <see cref="LoadTest.UnansweredRetries"/> times, a request whose connection was closed or reset
    /// before any response came (a server stopping at that instant); counted in <see cref="LoadTestResult.Unanswered"/>.
    /// HTTP lets a client retry a request it knows to be idempotent (RFC 9110, 9.2.2), and POST /predict is: it changes
    /// nothing on the server.
    /// </summary>
    public bool RetryUnanswered { get; init; }

    /// <summary>Called after each answered request with the number answered so far (e.g. to act once the load runs).</summary>
    public Action<int>? Answered { get; init; }
}

/// <summary>What a load test measured.</summary>
public sealed record LoadTestResult(int Requests, int Clients, int Errors, double Seconds, double RequestsPerSecond, double MeanMs, double P50Ms,
    double P99Ms, double MaxMs, long? ServerMemoryBeforeBytes, long? ServerMemoryAfterBytes, IReadOnlyDictionary<int, int> StatusCodes, double EarlyExitShare)
{
    /// <summary>Connections refused and retried (<see cref="LoadTestSettings.RetryRefused"/>); not errors.</summary>
    public int Refused { get; init; }

    /// <summary>Requests whose connection closed before any response, retried (<see cref="LoadTestSettings.RetryUnanswered"/>); not errors unless the retries failed too.</summary>
    public int Unanswered { get; init; }

    /// <summary>When each failed request (not answered 200) started, in seconds from the start of the run, in order.</summary>
    public IReadOnlyList<double> FailureTimes { get; init; } = [];

    /// <summary>Why requests failed, with how many failed so: the HTTP status, or the connection error's innermost message.</summary>
    public IReadOnlyDictionary<string, int> FailureReasons { get; init; } = new Dictionary<string, int>();

    /// <summary>A markdown table row and a summary line.</summary>
    public string ToMarkdown(string label)
    {
        var memory = ServerMemoryBeforeBytes is { } before && ServerMemoryAfterBytes is { } after
            ? string.Create(CultureInfo.InvariantCulture, $"{before / 1048576.0:F0} MB -> {after / 1048576.0:F0} MB")
            : "n/a";
        return string.Create(CultureInfo.InvariantCulture,
            $"| {label} | {Requests} | {Clients} | {RequestsPerSecond:F0} | {MeanMs:F2} | {P50Ms:F2} | {P99Ms:F2} | {Errors} | {EarlyExitShare:P1} | {memory} |");
    }

    /// <summary>The header of <see cref="ToMarkdown"/>'s table.</summary>
    public const string MarkdownHeader = "| run | requests | clients | req/s | mean ms | p50 ms | p99 ms | errors | exit early | server memory (before -> after) |\n|---|---|---|---|---|---|---|---|---|---|";
}

/// <summary>Sends real Fashion-MNIST test images to POST /predict from concurrent clients.</summary>
public static class LoadTest
{
    /// <summary>Status code recorded for a request whose connection failed (not refused).</summary>
    public const int ConnectionFailed = 0;

    /// <summary>Status code recorded for a request that timed out.</summary>
    public const int TimedOut = -1;

    private const int Refused = -2;

    /// <summary>Status code of a request whose connection closed or was reset before any response (not refused).</summary>
    private const int NoResponse = -3;

    /// <summary>The most retries of one request under <see cref="LoadTestSettings.RetryUnanswered"/>.</summary>
    public const int UnansweredRetries = 3;

    public static async Task<LoadTestResult> RunAsync(LoadTestSettings settings, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.Requests < 1 || settings.Clients < 1) throw new ArgumentException("Requests and clients must be positive.");
        var payloads = Payloads(settings.FashionMnistDirectory, settings.Payload, 256);
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = settings.Clients, PooledConnectionLifetime = TimeSpan.FromMinutes(5) };
        using var http = new HttpClient(handler) { BaseAddress = settings.Url, Timeout = TimeSpan.FromSeconds(60) };

        // Warm-up: the first requests load code paths and the allocator.
        for (var i = 0; i < Math.Min(20, settings.Requests); i++) await SendAsync(http, payloads[i % payloads.Count], cancellation);
        var memoryBefore = ResidentBytes(settings.ServerPid);

        // Per-client records: a run stopped early (or a long soak) never needs one slot per possible request.
        var records = Enumerable.Range(0, settings.Clients).Select(_ => new List<(double Ms, int Code, bool Early)>()).ToArray();
        var failureTimes = new System.Collections.Concurrent.ConcurrentBag<double>();
        var failureReasons = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        var next = -1;
        var answered = 0;
        var refused = 0;
        var unanswered = 0;
        var clock = Stopwatch.StartNew();
        var clients = Enumerable.Range(0, settings.Clients).Select(c => Task.Run(async () =>
        {
            while (!settings.Stop.IsCancellationRequested)
            {
                var i = Interlocked.Increment(ref next);
                if (i >= settings.Requests) return;
                var start = Stopwatch.GetTimestamp();
                var startedAt = clock.Elapsed.TotalSeconds;
                var (code, exitedEarly, failure) = await SendAsync(http, payloads[i % payloads.Count], cancellation);
                var retries = 0;
                while (!cancellation.IsCancellationRequested
                    && ((code == Refused && settings.RetryRefused) || (code == NoResponse && settings.RetryUnanswered && retries++ < UnansweredRetries)))
                {
                    if (code == Refused)
                    {
                        Interlocked.Increment(ref refused);
                        await Task.Delay(100, cancellation);
                    }
                    else
                    {
                        Interlocked.Increment(ref unanswered);
                    }
                    (code, exitedEarly, failure) = await SendAsync(http, payloads[i % payloads.Count], cancellation);
                }
                records[c].Add((Stopwatch.GetElapsedTime(start).TotalMilliseconds, code is Refused or NoResponse ? ConnectionFailed : code, exitedEarly));
                if (code != 200)
                {
                    failureTimes.Add(startedAt);
                    failureReasons.AddOrUpdate(failure ?? $"HTTP {code}", 1, (_, n) => n + 1);
                }
                settings.Answered?.Invoke(Interlocked.Increment(ref answered));
            }
        }, cancellation)).ToArray();
        await Task.WhenAll(clients);
        var seconds = clock.Elapsed.TotalSeconds;
        var memoryAfter = ResidentBytes(settings.ServerPid);
        var all = records.SelectMany(r => r).ToArray();
        if (all.Length == 0) throw new InvalidOperationException("The load test was stopped before its first request.");
        var sorted = all.Select(r => r.Ms).Order().ToArray();
        double Percentile(double q) => sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];
        return new LoadTestResult(all.Length, settings.Clients, all.Count(r => r.Code != 200), seconds, all.Length / seconds, sorted.Average(),
            Percentile(0.5), Percentile(0.99), sorted[^1], memoryBefore, memoryAfter,
            all.GroupBy(r => r.Code).ToDictionary(g => g.Key, g => g.Count()), all.Count(r => r.Early) / (double)all.Length)
        {
            Refused = refused,
            Unanswered = unanswered,
            FailureTimes = failureTimes.Order().ToArray(),
            FailureReasons = new SortedDictionary<string, int>(failureReasons, StringComparer.Ordinal),
        };
    }

    /// <summary>One request: its status (or <see cref="ConnectionFailed"/>, <see cref="TimedOut"/>, refused), and for a failed connection why.</summary>
    private static async Task<(int Code, bool Early, string? Failure)> SendAsync(HttpClient http, (byte[] Body, string ContentType) payload, CancellationToken cancellation)
    {
        HttpResponseMessage response;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri("predict", UriKind.Relative)) { Content = new ByteArrayContent(payload.Body) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue(payload.ContentType);
            // Headers only: a failure from here on had no response; one while reading the body below had a response cut off.
            response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellation);
        }
        catch (HttpRequestException ex) when (ex.HttpRequestError == HttpRequestError.ConnectionError
            && ex.InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionRefused })
        {
            return (Refused, false, "connection refused");
        }
        catch (HttpRequestException ex)
        {
            // No response at all: the connection closed or was reset while the request was sent or awaited.
            return (NoResponse, false, $"no response ({ex.HttpRequestError}: {Innermost(ex).Message})");
        }
        catch (TaskCanceledException) when (!cancellation.IsCancellationRequested)
        {
            return (TimedOut, false, "timed out");
        }
        using (response)
        {
            try
            {
                var text = await response.Content.ReadAsStringAsync(cancellation);
                return ((int)response.StatusCode, text.Contains("\"exitedEarly\":true", StringComparison.Ordinal), null);
            }
            catch (HttpRequestException ex)
            {
                return (ConnectionFailed, false, $"response cut off ({ex.HttpRequestError}: {Innermost(ex).Message})");
            }
            catch (TaskCanceledException) when (!cancellation.IsCancellationRequested)
            {
                return (TimedOut, false, "timed out");
            }
        }
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex.InnerException is { } inner) ex = inner;
        return ex;
    }

    /// <summary>PNG (or JSON pixel) bodies of the first Fashion-MNIST test images.</summary>
    public static IReadOnlyList<(byte[] Body, string ContentType)> Payloads(string? directory, string kind, int count)
    {
        var context = new MLContext(0);
        // Identity normalisation: the raw pixels in [0, 1].
        var data = context.Data.TakeRows(context.Data.LoadFashionMnist(DatasetSplit.Test, directory, ChannelNormalization.Identity(1)), count);
        var payloads = new List<(byte[], string)>();
        using var cursor = data.GetRowCursor([data.Schema["Image"]]);
        var getter = cursor.GetGetter<VBuffer<float>>(data.Schema["Image"]);
        VBuffer<float> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            var pixels = value.DenseValues().Select(v => (byte)Math.Round(v * 255)).ToArray();
            payloads.Add(kind == "json"
                ? (Encoding.UTF8.GetBytes("{\"pixels\":[" + string.Join(",", pixels) + "]}"), "application/json")
                : (Png(pixels, 28, 28), "image/png"));
        }
        return payloads;
    }

    /// <summary>An 8-bit grayscale PNG of raw pixels.</summary>
    public static byte[] Png(byte[] gray, int width, int height)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Gray8, SKAlphaType.Opaque));
        System.Runtime.InteropServices.Marshal.Copy(gray, 0, bitmap.GetPixels(), gray.Length);
        using var image = SKImage.FromBitmap(bitmap);
        using var encoded = image.Encode(SKEncodedImageFormat.Png, 100);
        return encoded.ToArray();
    }

    private static long? ResidentBytes(int? pid)
    {
        if (pid is not { } id) return null;
        try
        {
            using var process = Process.GetProcessById(id);
            return process.WorkingSet64;
        }
        catch (ArgumentException)
        {
            return null;
        }
    }
}
