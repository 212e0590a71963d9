using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Gati.MLNet.Tests.Infrastructure;
using Gati.Samples.LoadTest;
using Xunit.Abstractions;

namespace Gati.Samples.WebApi.Tests;

/// <summary>
/// The sample as a real server process on loopback under a bounded load: a fixed number of requests from concurrent
/// clients. Checks zero errors and bounded server memory, and reports throughput and p99 (never asserted: timings
/// belong in benchmarks).
/// </summary>
public sealed class LoadTests(ServingModels models, ITestOutputHelper output) : IClassFixture<ServingModels>
{
    private sealed class Server : IDisposable
    {
        private readonly Process _process;
        private readonly List<(string Fragment, TaskCompletionSource Seen)> _watches = [];

        public Server(string modelPath, bool batching, double drainSeconds = 0)
        {
            var port = FreePort();
            Url = new Uri($"http://127.0.0.1:{port}/");
            var dll = SampleAssembly();
            var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
            {
                WorkingDirectory = Path.GetDirectoryName(dll)!,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            start.ArgumentList.Add("exec");
            start.ArgumentList.Add(dll);
            start.ArgumentList.Add("--urls");
            start.ArgumentList.Add(Url.ToString().TrimEnd('/'));
            start.Environment["Gati__ModelPath"] = modelPath;
            start.Environment["Gati__Pool__Device"] = "cpu";
            start.Environment["Gati__Pool__Batching"] = batching ? "true" : "false";
            start.Environment["Gati__Pool__ReloadDebounceMs"] = "100";
            start.Environment["Gati__DrainSeconds"] = drainSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            start.Environment["Logging__LogLevel__Default"] = "Warning";
            // The pool's and the sample's own log lines (loads, reloads, the drain) are the events tests wait for.
            start.Environment["Logging__LogLevel__Gati.Extensions.ML"] = "Information";
            start.Environment["Logging__LogLevel__Gati.Samples.WebApi"] = "Information";
            start.Environment["Logging__Console__FormatterOptions__SingleLine"] = "true";
            _process = Process.Start(start)!;
            _process.OutputDataReceived += (_, e) => OnOutput(e.Data);
            _process.ErrorDataReceived += (_, _) => { };
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
            using var http = new HttpClient { BaseAddress = Url };
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (true)
            {
                if (_process.HasExited) throw new InvalidOperationException($"The sample server exited with code {_process.ExitCode}.");
                try
                {
                    if (http.GetAsync(new Uri("health", UriKind.Relative)).GetAwaiter().GetResult().StatusCode == HttpStatusCode.OK) break;
                }
                catch (HttpRequestException)
                {
                }
                if (DateTime.UtcNow > deadline) throw new TimeoutException("The sample server did not become healthy.");
                Thread.Sleep(200);
            }
        }

        public Uri Url { get; }

        /// <summary>Completes when the server writes a line containing <paramref name="fragment"/> from now on.</summary>
        public Task WhenOutput(string fragment)
        {
            var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_watches) _watches.Add((fragment, seen));
            return seen.Task;
        }

        private void OnOutput(string? line)
        {
            if (line is null) return;
            lock (_watches)
            {
                foreach (var watch in _watches.Where(w => line.Contains(w.Fragment, StringComparison.Ordinal))) watch.Seen.TrySetResult();
                _watches.RemoveAll(w => w.Seen.Task.IsCompleted);
            }
        }

        public int Pid => _process.Id;

        /// <summary>Asks the server to stop as a service manager does (SIGTERM).</summary>
        public void Terminate()
        {
            if (Kill(_process.Id, SigTerm) != 0) throw new InvalidOperationException($"kill({_process.Id}, SIGTERM) failed: errno {Marshal.GetLastPInvokeError()}.");
        }

        /// <summary>Waits for the server to exit by itself and returns its exit code.</summary>
        public async Task<int> ExitCodeAsync(TimeSpan guard)
        {
            await _process.WaitForExitAsync().WaitAsync(guard);
            return _process.ExitCode;
        }

        private const int SigTerm = 15;

        [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
        private static extern int Kill(int pid, int signal);

        public void Dispose()
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
            _process.Dispose();
        }

        private static int FreePort()
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }

        private static string SampleAssembly()
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            var configuration = dir.Parent!.Name;
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Gati.MLNet.sln"))) dir = dir.Parent;
            var path = Path.Combine(dir!.FullName, "samples", "Gati.Samples.WebApi", "bin", configuration, "net10.0", "Gati.Samples.WebApi.dll");
            return File.Exists(path) ? path : throw new FileNotFoundException("The web sample is not built.", path);
        }
    }

    /// <summary>
    /// An open-ended JSON load (events, not timing): <see cref="WhenRunningAsync"/> completes once 100 requests are
    /// answered, and the load stops itself after <c>answersAfter</c> more answers once <c>trigger</c> has completed.
    /// </summary>
    private sealed class LoadAcross : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly TaskCompletionSource _running = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _answeredAfter;

        public LoadAcross(Uri url, int clients, Task trigger, int answersAfter)
        {
            Result = LoadTest.LoadTest.RunAsync(new LoadTestSettings(url, Requests: 1_000_000, Clients: clients, Payload: "json",
                FashionMnistDirectory: RealData.FashionMnistDirectory)
            {
                Stop = _stop.Token,
                Answered = answered =>
                {
                    if (answered >= 100) _running.TrySetResult();
                    if (trigger.IsCompleted && Interlocked.Increment(ref _answeredAfter) == answersAfter) _stop.Cancel();
                },
            });
        }

        public Task<LoadTestResult> Result { get; }

        /// <summary>Requests answered after the trigger completed.</summary>
        public int AnsweredAfter => Volatile.Read(ref _answeredAfter);

        public async Task WhenRunningAsync(TimeSpan guard)
        {
            await Task.WhenAny(_running.Task, Result).WaitAsync(guard);
            Assert.True(_running.Task.IsCompleted, "the load ended before 100 answers");
        }

        public void Dispose() => _stop.Dispose();
    }

    [Fact]
    public async Task BoundedLoad_OnLoopback_ServesEveryRequestWithStableMemory()
    {
        using var server = new Server(models.First, batching: true);
        var settings = new LoadTestSettings(server.Url, Requests: 800, Clients: 8, ServerPid: server.Pid, FashionMnistDirectory: RealData.FashionMnistDirectory);
        var warm = await LoadTest.LoadTest.RunAsync(settings);
        using var http = new HttpClient { BaseAddress = server.Url };
        var before = await ServerMetrics.ScrapeAsync(http);
        var result = await LoadTest.LoadTest.RunAsync(settings);
        var after = await ServerMetrics.ScrapeAsync(http);
        output.WriteLine(LoadTestResult.MarkdownHeader);
        output.WriteLine(warm.ToMarkdown("warm-up run"));
        output.WriteLine(result.ToMarkdown("measured run"));
        output.WriteLine(ServerMetrics.BreakdownHeader);
        output.WriteLine(after.Breakdown(before, "measured run", result.MeanMs));
        // Where the time went: every part was measured over the run (values are reported, never asserted).
        foreach (var part in new[] { "http_server_request_duration", "webapi_request_read", "webapi_request_decode", "webapi_request_predict", "gati_batch_wait", "gati_prediction_duration" })
            Assert.True(after.MeanSince(before, part) is > 0, $"the server's /metrics has no {part} histogram that moved during the run");
        Assert.Equal(0, warm.Errors);
        Assert.Equal(0, result.Errors);
        Assert.Equal(800, result.StatusCodes[200]);
        var growth = result.ServerMemoryAfterBytes!.Value - warm.ServerMemoryBeforeBytes!.Value;
        Assert.True(growth < 150L << 20, $"server memory grew by {growth >> 20} MB over 1,600 requests");
    }

    [Fact]
    public async Task HotReload_UnderLoad_NoRequestFails()
    {
        var guard = TimeSpan.FromMinutes(3);
        using var temp = new TempDirectory();
        var path = temp.File("model.zip");
        File.Copy(models.First, path);
        using var server = new Server(path, batching: true);
        // Events, not timing: the model is replaced once the load runs, and the load goes on until 200 requests have been
        // answered after the server reported the reload (no exact generation number: a change may reload more than once).
        var reloaded = server.WhenOutput("replaces generation");
        using var load = new LoadAcross(server.Url, clients: 6, reloaded, answersAfter: 200);
        await load.WhenRunningAsync(guard);
        var staging = temp.File("staging.zip");
        File.Copy(models.Second, staging);
        File.Move(staging, path, overwrite: true);
        await reloaded.WaitAsync(guard);
        var result = await load.Result.WaitAsync(guard);
        output.WriteLine(result.ToMarkdown("load during a reload"));
        Assert.Equal(0, result.Errors);
        Assert.True(load.AnsweredAfter >= 200);
    }

    [Fact]
    public async Task Sigterm_UnderLoad_DrainsWithConnectionCloseAndUnhealthyThenExitsCleanly()
    {
        // The server keeps answering for its drain time after SIGTERM: /health says 503 (a load balancer takes it out),
        // responses carry Connection: close (clients leave their keep-alive connections), and no request fails.
        var guard = TimeSpan.FromMinutes(2);
        using var server = new Server(models.First, batching: true, drainSeconds: 10);
        var draining = server.WhenOutput("draining for 10 s");
        using var load = new LoadAcross(server.Url, clients: 4, draining, answersAfter: 100);
        await load.WhenRunningAsync(guard);
        server.Terminate();
        await draining.WaitAsync(guard);

        using var http = new HttpClient { BaseAddress = server.Url };
        using (var health = await http.GetAsync(new Uri("health", UriKind.Relative)))
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        using (var body = new StringContent("{\"pixels\":[" + string.Join(",", models.RawImages[0]) + "]}", System.Text.Encoding.UTF8, "application/json"))
        using (var answer = await http.PostAsync(new Uri("predict", UriKind.Relative), body))
        {
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            Assert.True(answer.Headers.ConnectionClose, "a response while draining must close its connection");
        }
        var result = await load.Result.WaitAsync(guard);
        output.WriteLine(result.ToMarkdown("load until 100 answers after SIGTERM"));
        Assert.Equal(0, result.Errors);
        Assert.True(load.AnsweredAfter >= 100);
        Assert.Equal(0, await server.ExitCodeAsync(guard));
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public async Task LoadGenerator_ConnectionClosedBeforeAnyResponse_IsRetriedOnlyWhenAskedAndACutOffResponseNever(bool retry, bool cutOff)
    {
        // A loopback HTTP server that reads every third request and closes its connection without answering, or (cutOff)
        // after the headers and 2 of the 100 body bytes they announce.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var stop = new CancellationTokenSource();
        var requests = 0;
        var serving = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var client = await listener.AcceptTcpClientAsync(stop.Token);
                _ = Task.Run(async () =>
                {
                    using (client)
                    {
                        var stream = client.GetStream();
                        while (await ReadRequestAsync(stream))
                        {
                            var broken = Interlocked.Increment(ref requests) % 3 == 0;
                            if (broken && !cutOff) return; // closed, no answer
                            var answer = broken
                                ? "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{}"u8.ToArray()
                                : "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"u8.ToArray();
                            await stream.WriteAsync(answer);
                            if (broken) return; // cut off
                        }
                    }
                });
            }
        });
        var url = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}/");
        var result = await LoadTest.LoadTest.RunAsync(new LoadTestSettings(url, Requests: 30, Clients: 1, Payload: "json",
            FashionMnistDirectory: RealData.FashionMnistDirectory) { RetryUnanswered = retry }).WaitAsync(TimeSpan.FromMinutes(2));
        await stop.CancelAsync();
        listener.Stop();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => serving);
        Assert.Equal(30, result.Requests);
        if (cutOff)
        {
            // A response that began is never sent again: it is an error however the client is set.
            Assert.Equal(10, result.Errors);
            Assert.Equal(0, result.Unanswered);
            Assert.All(result.FailureReasons.Keys, reason => Assert.StartsWith("response cut off", reason));
        }
        else if (retry)
        {
            Assert.Equal(0, result.Errors);
            Assert.True(result.Unanswered >= 9, $"{result.Unanswered} retried");
        }
        else
        {
            Assert.True(result.Errors >= 9, $"{result.Errors} errors");
            Assert.Equal(0, result.Unanswered);
            Assert.All(result.FailureReasons.Keys, reason => Assert.StartsWith("no response", reason));
        }
    }

    /// <summary>Reads one HTTP/1.1 request (headers, then Content-Length bytes); false at the end of the stream.</summary>
    private static async Task<bool> ReadRequestAsync(NetworkStream stream)
    {
        var header = new List<byte>();
        var one = new byte[1];
        while (header.Count < 4 || !(header[^4] == '\r' && header[^3] == '\n' && header[^2] == '\r' && header[^1] == '\n'))
        {
            if (await stream.ReadAsync(one) == 0) return false;
            header.Add(one[0]);
        }
        var text = System.Text.Encoding.ASCII.GetString(header.ToArray());
        var line = text.Split("\r\n").First(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
        var body = new byte[int.Parse(line["Content-Length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture)];
        await stream.ReadExactlyAsync(body);
        return true;
    }
}
