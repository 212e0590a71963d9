using Gati.MLNet.Online;

namespace Gati.Cli.Commands;

// The replays of a workload benchmark: one set of caches serving a stream in turns, and what collections cost it.
internal sealed partial class WorkloadBenchmark
{
    /// <summary>One set of caches (static, or continuously updated) serving a stream in turns.</summary>
    private sealed class Replayer : IDisposable
    {
        private readonly Workload _workload;
        private readonly float[] _images;
        private readonly int _size;
        private readonly float[] _input;
        private readonly OnlineCaches? _updater;
        private readonly List<IDisposable> _retired = [];
        private readonly List<(int Request, UpdateOutcome Outcome)> _updates = [];
        private readonly List<int> _reactions = [];
        // The request at which each attempt began, by attempt number (guarded by _updates).
        private readonly Dictionary<int, int> _starts = [];
        private readonly List<(int Request, TrafficChange Change)> _changes = [];
        private EarlyExitEngine _engine;
        private LearnedCachesTransformer _served;
        private int _request;

        /// <summary>The serving engine's backend and threads (the same settings for every replay and generation).</summary>
        public string EngineDescription => Volatile.Read(ref _engine).BackendDescription;

        public Replayer(LearnedCachesTransformer caches, EarlyExitEngineOptions options, OnlineCacheOptions? online, Workload workload, float[] images, int size,
            IAnsiConsole console)
        {
            _workload = workload;
            _images = images;
            _size = size;
            _input = new float[size];
            Answers = new Served[workload.Count];
            _engine = EarlyExitEngine.Create(caches.BaseModel, caches.Caches, options);
            _served = caches.WithCaches(caches.Caches);
            try
            {
                if (online is not null)
                {
                    _updater = new OnlineCaches(_served, _engine, options, online, (next, nextModel) =>
                    {
                        // One client calls one request at a time: the old engine has no call in flight once the swap is seen.
                        var old = Interlocked.Exchange(ref _engine, next);
                        var oldModel = Interlocked.Exchange(ref _served, nextModel);
                        lock (_retired)
                        {
                            _retired.Add(old);
                            _retired.Add(oldModel);
                        }
                    });
                    _updater.UpdateStarting += (_, number) =>
                    {
                        lock (_updates) _starts[number] = Volatile.Read(ref _request);
                    };
                    _updater.Updated += (_, outcome) =>
                    {
                        lock (_updates) _updates.Add((Volatile.Read(ref _request), outcome));
                        // Markup inside an interpolation hole is escaped: the colour goes in the format string.
                        if (outcome.Accepted)
                            console.MarkupLineInterpolated($"  update {outcome.Number} at request {Volatile.Read(ref _request)}: [green]accepted[/] ({outcome.CpuSeconds:F1} s of CPU)");
                        else
                            console.MarkupLineInterpolated($"  update {outcome.Number} at request {Volatile.Read(ref _request)}: rejected ({outcome.CpuSeconds:F1} s of CPU)");
                    };
                    _updater.Sampler.Reacted += (_, _) =>
                    {
                        lock (_reactions) _reactions.Add(Volatile.Read(ref _request));
                    };
                    _updater.Sampler.TrafficChanged += (_, change) =>
                    {
                        lock (_changes) _changes.Add((Volatile.Read(ref _request), change));
                    };
                }
                for (var i = 0; i < 200; i++)
                {
                    images.AsSpan(workload.Rows[i % workload.Count] * size, size).CopyTo(_input);
                    Volatile.Read(ref _engine).Run(_input, 1);
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        /// <summary>Latency, exit and answer of every request served so far, in stream order.</summary>
        public Served[] Answers { get; }

        /// <summary>Garbage collections during this replay's turns.</summary>
        public GcActivity Gc { get; private set; }

        public void Pause() => _updater?.Pause();

        public void Resume() => _updater?.Resume();

        /// <summary>
        /// Serves requests [from, to) at a fixed rate, as at a server that is not saturated: the updater works in the
        /// gaps, on the same cores, and whatever it takes from serving shows in the latencies. Between requests the
        /// client sleeps while a sleep (about a millisecond here) cannot overshoot, and spins only for the rest, as an
        /// idle server thread blocks rather than holding its core.
        /// </summary>
        public void Serve(int from, int to, double rate)
        {
            var gcBefore = GcActivity.Now();
            var interval = Stopwatch.Frequency / rate;
            var sleepable = Stopwatch.Frequency * 3 / 2000;
            var due = Stopwatch.GetTimestamp();
            for (var i = from; i < to; i++)
            {
                due += (long)interval;
                while (Stopwatch.GetTimestamp() < due)
                {
                    if (due - Stopwatch.GetTimestamp() > sleepable) Thread.Sleep(1);
                    else Thread.SpinWait(20);
                }
                Volatile.Write(ref _request, i);
                _images.AsSpan(_workload.Rows[i] * _size, _size).CopyTo(_input);
                var drawnBefore = _updater?.Sampler.RowsDrawn ?? 0;
                var start = Stopwatch.GetTimestamp();
                var result = Volatile.Read(ref _engine).Run(_input, 1);
                var ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                Answers[i] = new Served(ms, result.ExitLayer[0], result.PredictedClass[0], (_updater?.Sampler.RowsDrawn ?? 0) > drawnBefore);
                if (_retired.Count > 0)
                {
                    lock (_retired)
                    {
                        foreach (var old in _retired) old.Dispose();
                        _retired.Clear();
                    }
                }
            }
            Gc += GcActivity.Now() - gcBefore;
        }

        /// <summary>This replay for the activity plot: per-request latency and agreement, and its events by request.</summary>
        public WorkloadActivityPlot.Replay ForPlot(string name, int[] baseClass)
        {
            (int, bool)[] updates;
            int[] reactions;
            // Attempts that stopped for too few rows tried nothing: they are not plotted as rejected.
            lock (_updates) updates = _updates.Where(u => !u.Outcome.TooFewRows).Select(u => (u.Request, u.Outcome.Accepted)).ToArray();
            lock (_reactions) reactions = _reactions.ToArray();
            int[] changes;
            lock (_changes) changes = _changes.Select(c => c.Request).ToArray();
            return new WorkloadActivityPlot.Replay(name, Answers.Select(a => a.Ms).ToArray(),
                Answers.Select((a, i) => a.Class == baseClass[_workload.Rows[i]]).ToArray(), updates, reactions, changes);
        }

        public OnlineSummary? Summary()
        {
            if (_updater is null) return null;
            var sampler = _updater.Sampler;
            (int, TrafficChange)[] changes;
            lock (_changes) changes = _changes.ToArray();
            lock (_updates)
                return new OnlineSummary(_updates.ToArray(), new Dictionary<int, int>(_starts), sampler.Reactions.ToArray(), changes, _updater.UpdaterCpuSeconds, sampler.Dropped, sampler.FullRunsSkipped, sampler.Labelled,
                    sampler.Failed, sampler.LastFailure, sampler.Agreement, sampler.WorkerBusy.TotalSeconds, sampler.ActivationSource, _updater.Options.StepAsideForRequests, sampler.SteppedAside.TotalSeconds, sampler.StepAsideTimeouts);
        }

        public void Dispose()
        {
            _updater?.Resume();
            _updater?.Dispose();
            lock (_retired) foreach (var old in _retired) old.Dispose();
            _engine.Dispose();
            _served.Dispose();
        }
    }

    /// <summary>Collections by generation and time paused (what the shadow window's churn costs serving threads).</summary>
    private readonly record struct GcActivity(int Gen0, int Gen1, int Gen2, TimeSpan Paused)
    {
        public static GcActivity operator +(GcActivity a, GcActivity b) => new(a.Gen0 + b.Gen0, a.Gen1 + b.Gen1, a.Gen2 + b.Gen2, a.Paused + b.Paused);

        public static GcActivity Now() => new(GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2), GC.GetTotalPauseDuration());

        public static GcActivity operator -(GcActivity after, GcActivity before) =>
            new(after.Gen0 - before.Gen0, after.Gen1 - before.Gen1, after.Gen2 - before.Gen2, after.Paused - before.Paused);

        public override string ToString() => string.Create(CultureInfo.InvariantCulture,
            $"{Gen0} / {Gen1} / {Gen2} collections (gen 0 / 1 / 2), {Paused.TotalMilliseconds:F0} ms paused");
    }
}
