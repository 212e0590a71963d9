using System.Diagnostics;
using System.Threading.Channels;
using Gati.MLNet.Inference;
using Gati.MLNet.Policy;

namespace Gati.MLNet.Online;

/// <summary>What the sampler did when a cache's live agreement fell below the target.</summary>
/// <param name="Layer">The cache's layer.</param>
/// <param name="OldThreshold">Threshold before.</param>
/// <param name="NewThreshold">Threshold after (+∞: the cache is off).</param>
/// <param name="Reason">Why, in words (the live figures that triggered it).</param>
public sealed record ThresholdReaction(int Layer, float OldThreshold, float NewThreshold, string Reason);

/// <summary>
/// Shadows the requests an early-exit engine serves (docs/online.md): draws a uniform sample of them (and keeps those
/// that ran the whole network, at the cost of a copy), runs the sampled requests that exited early through the rest
/// of the network on a background thread (never on the request's path) to learn the base model's answer, keeps the
/// completed rows in a byte-bounded window, tracks live agreement per cache and overall, and reacts at once when a
/// cache's lower bound falls below the target: its threshold is raised from the live rows to the lowest value whose
/// exits clear the target at the stated confidence, or the cache is turned off when none does.
/// </summary>
public sealed partial class ShadowSampler : IShadowTap, IDisposable
{
    private readonly OnlineCacheOptions _options;
    // Two queues: uniformly sampled rows, which judge the caches in force, go before full runs, which only train the
    // updater. On the single graph a full run costs the worker a whole forward pass, and where nearly half the requests
    // run in full (an imported ResNet-18), one queue left the sampled rows of a drift waiting behind thousands of them.
    private readonly Channel<ShadowRow> _sampled = Pending();
    private readonly Channel<ShadowRow> _fullRuns = Pending();
    private readonly ManualResetEventSlim _rowsWaiting = new(false);
    private readonly Thread _worker;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _reactionGate = new();
    private readonly object _randomGate = new();
    private readonly Random _random;
    private readonly Random _fullRunRandom;
    private long _fullRunsSkipped;
    private EarlyExitEngine _engine;
    private long _dropped;
    private long _handed;
    private long _processed;
    private long _labelled;
    private long _failed;
    private string? _lastFailure;

    internal ShadowSampler(EarlyExitEngine engine, OnlineCacheOptions options)
    {
        options.Validate();
        _options = options;
        _engine = engine;
        _random = new Random(options.Seed);
        _fullRunRandom = new Random(unchecked(options.Seed * 31 + 7));
        _layers = engine.Caches.Select(c => c.Layer).ToArray();
        Window = new ShadowWindow((long)(options.WindowMegabytes * 1048576));
        Live = new LiveAgreement(Layers, options.LiveWindow, options.Confidence);
        _minimumSamples = MinimumSamples();
        _samplesToShowKept = SamplesToShowKept();
        _exitMix = new ExitMixWatch(_layers.Length);
        // Timed before the observer is attached, on the serving engine's own sessions.
        CopyActivations = ActivationCopy.For(engine, options);
        if (CopyActivations.Copy) engine.PrepareTapped();
        _observer = new ShadowObserver(this);
        engine.Observer = _observer;
        // Off the request path, below serving's priority: labelling, judging and continuing sampled rows.
        _worker = new Thread(ContinueLoop) { IsBackground = true, Name = "Gati shadow continuation" };
        _worker.Start();
    }

    private readonly int[] _layers;
    private readonly ShadowObserver _observer;

    // Drop: live agreement has shown the target kept on requests served by this generation; the figures a new
    // generation starts from (its validation outcomes) do not count towards it.
    private bool _shownKept;
    private long _judgedThisGeneration;
    private readonly long _samplesToShowKept;
    private readonly long _minimumSamples;

    /// <summary>Where the activations of rows kept at batch 1 come from, and why.</summary>
    internal ActivationCopy CopyActivations { get; }

    /// <summary>
    /// Whether a request kept at batch 1 copies its activations as it runs (true: on the single graph's tapped form, or
    /// segment by segment where the engine has no single graph) or takes the plain single graph, the worker recomputing them (<see cref="OnlineCacheOptions.CopyActivationsOnRequest"/>).
    /// </summary>
    public bool CopiesActivations => CopyActivations.Copy;

    /// <summary>How <see cref="CopiesActivations"/> was decided, in words (the timings when measured).</summary>
    public string ActivationSource => CopyActivations.Reason;

    /// <summary>The cache layers (the window's feature layers), in order.</summary>
    public IReadOnlyList<int> Layers => _layers;

    /// <summary>The completed rows (every cache layer's features and the base answer).</summary>
    public ShadowWindow Window { get; }

    /// <summary>Live agreement from the sampled rows.</summary>
    public LiveAgreement Live { get; }

    /// <summary>Sampled rows dropped because the continuation queue was full (the sample thins under overload).</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Full runs left out by <see cref="OnlineCacheOptions.FullRunFraction"/> (never queued, never computed).</summary>
    public long FullRunsSkipped => Interlocked.Read(ref _fullRunsSkipped);

    /// <summary>Sampled rows whose continuation failed (see <see cref="LastFailure"/>); they are left out of the window.</summary>
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Why the last continuation failed, if one did.</summary>
    public string? LastFailure => Volatile.Read(ref _lastFailure);

    /// <summary>
    /// Time the shadow worker has spent computing and completing rows (not waiting for rows; with
    /// <see cref="OnlineCacheOptions.StepAsideForRequests"/>, its waits for requests are included): the background work
    /// shadowing costs, beside the updater's.
    /// </summary>
    public TimeSpan WorkerBusy => TimeSpan.FromTicks(Interlocked.Read(ref _workerBusyTicks));

    private long _workerBusyTicks;

    /// <summary>The longest background work waits at a time for requests to finish (<see cref="OnlineCacheOptions.StepAsideForRequests"/>).</summary>
    internal static readonly TimeSpan MostStepAside = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Before each piece of background work (a segment the worker runs, a training step of the updater): waits while the
    /// serving engine has a request in flight, at most <see cref="MostStepAside"/>, so that a server kept busy still
    /// gets its rows completed (<see cref="OnlineCacheOptions.StepAsideForRequests"/>).
    /// </summary>
    internal void StepAside()
    {
        if (!_options.StepAsideForRequests) return;
        var start = Stopwatch.GetTimestamp();
        if (!Engine.WaitUntilIdle(MostStepAside)) Interlocked.Increment(ref _stepAsideTimeouts);
        Interlocked.Add(ref _steppedAsideTicks, Stopwatch.GetElapsedTime(start).Ticks);
    }

    private long _steppedAsideTicks;
    private long _stepAsideTimeouts;

    /// <summary>Time background work spent waiting for requests to finish (<see cref="OnlineCacheOptions.StepAsideForRequests"/>).</summary>
    public TimeSpan SteppedAside => TimeSpan.FromTicks(Interlocked.Read(ref _steppedAsideTicks));

    /// <summary>Times background work stopped waiting for requests after <see cref="MostStepAside"/> (the server stayed busy).</summary>
    public long StepAsideTimeouts => Interlocked.Read(ref _stepAsideTimeouts);

    /// <summary>Rows completed so far (their base answer known).</summary>
    public long Labelled => Interlocked.Read(ref _labelled);

    /// <summary>Threshold changes made so far, oldest first.</summary>
    public IReadOnlyList<ThresholdReaction> Reactions
    {
        get
        {
            lock (_reactionGate) return _reactions.ToArray();
        }
    }

    /// <summary>How many threshold changes were made so far.</summary>
    internal int ReactionCount
    {
        get
        {
            lock (_reactionGate) return _reactions.Count;
        }
    }

    private readonly List<ThresholdReaction> _reactions = [];
    private readonly ManualResetEventSlim _running = new(true);

    /// <summary>Raised after a threshold reaction (on the sampler's thread).</summary>
    public event EventHandler<ThresholdReaction>? Reacted;

    /// <summary>The current figures with the thresholds in force.</summary>
    public LiveAgreementSnapshot Agreement => Live.Snapshot(Volatile.Read(ref _engine).Thresholds);

    /// <summary>The engine served now (the updater swaps in new generations; the window and the live figures carry over).</summary>
    internal EarlyExitEngine Engine => Volatile.Read(ref _engine);

    /// <summary>
    /// Moves shadowing to a new engine over caches on the same layers (after an update). The live figures start again,
    /// from <paramref name="validated"/> when given: the new caches' simulated outcomes (exit cache, agreed) on the fresh
    /// sampled rows they were accepted on, so that the first judgement of the new generation does not stand on a
    /// handful of rows.
    /// </summary>
    internal void Attach(EarlyExitEngine engine, IReadOnlyList<(int Exit, bool Agreed)>? validated)
    {
        if (!engine.Caches.Select(c => c.Layer).SequenceEqual(Layers))
            throw new ArgumentException("The new engine's caches must sit on the same layers.", nameof(engine));
        // A new generation's tapped graph opens here, on the updater's thread, not on the first kept request.
        if (CopyActivations.Copy) engine.PrepareTapped();
        engine.Observer = _observer;
        var old = Interlocked.Exchange(ref _engine, engine);
        if (!ReferenceEquals(old, engine)) old.Observer = null;
        lock (_reactionGate)
        {
            // The new caches' exits are new outcomes.
            _shownKept = false;
            Interlocked.Exchange(ref _judgedThisGeneration, 0);
            _exitMix.Reset();
            for (var i = 0; i < Layers.Count; i++) Live.Reset(i);
            Live.ResetOverall();
            foreach (var (exit, agreed) in validated ?? []) Live.Add(exit, agreed);
        }
    }

    // Full runs are training rows for the updater and never enter the live agreement: without updates nobody reads them,
    // and on the single graph each one would cost the worker a whole forward pass.
    bool IShadowTap.CaptureFullRuns => _options.CaptureFullRuns && _options.Updates;

    bool[]? IShadowTap.Choose(int count)
    {
        Interlocked.Add(ref _requestsSeen, count);
        if (_options.SampleFraction <= 0) return null;
        var chosen = new bool[count];
        lock (_randomGate)
        {
            for (var i = 0; i < count; i++) chosen[i] = _random.NextDouble() < _options.SampleFraction;
        }
        return chosen;
    }

    bool[]? IShadowTap.KeepFullRuns(int count)
    {
        if (_options.FullRunFraction >= 1) return null;
        var kept = new bool[count];
        lock (_randomGate)
        {
            for (var i = 0; i < count; i++) kept[i] = _fullRunRandom.NextDouble() < _options.FullRunFraction;
        }
        return kept;
    }

    void IShadowTap.LeftOut(int count) => Interlocked.Add(ref _fullRunsSkipped, count);

    void IShadowTap.Drawn(int rows) => Interlocked.Add(ref _rowsDrawn, rows);

    /// <summary>
    /// Rows that calls drew to keep before they ran: sampled, or kept should they run the whole network. At batch 1 with
    /// <see cref="CopiesActivations"/>, each such request ran on the single graph's tapped form instead of its plain one.
    /// </summary>
    public long RowsDrawn => Interlocked.Read(ref _rowsDrawn);

    private long _rowsDrawn;

    bool IShadowTap.CopyActivations => CopyActivations.Copy;

    void IShadowTap.Captured(IReadOnlyList<ShadowRow> rows)
    {
        // The request path only hands rows over: completing, judging and continuing happen on the worker. It only counts
        // where sampled rows exited, to see a change of traffic (Judging).
        foreach (var row in rows)
        {
            if (row.Sampled) Watch(row);
            if ((row.Sampled ? _sampled : _fullRuns).Writer.TryWrite(row)) Interlocked.Increment(ref _handed);
            else Interlocked.Increment(ref _dropped);
        }
        try
        {
            _rowsWaiting.Set();
        }
        catch (ObjectDisposedException)
        {
            // A request that finishes after the sampler was disposed: its rows went into closed queues, as dropped.
        }
    }

    /// <summary>
    /// Waits until the worker has dealt with every row handed to it so far (completed, continued, or counted as failed
    /// or lost); false if <paramref name="timeout"/> passed first. For tests and benchmarks that must not depend on how
    /// fast the below-normal worker gets CPU time.
    /// </summary>
    internal bool WaitForPending(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (Interlocked.Read(ref _processed) < Interlocked.Read(ref _handed))
        {
            if (DateTime.UtcNow > deadline) return false;
            Thread.Sleep(1);
        }
        return true;
    }

    /// <summary>
    /// Completes rows that ran in full, and runs sampled rows that exited early through the rest of the network,
    /// several at a time by where they stopped. A wait of up to 100 ms gathers up to 64 rows: at a few hundred
    /// requests a second, waiting 10 ms gave calls of one or two rows, a hundred a second, and requests served beside
    /// them were 20 % slower; batches of tens of rows cost serving nothing measurable (docs/online.md).
    /// </summary>
    private void ContinueLoop()
    {
        BackgroundPriority.Lower();
        var (sampled, fullRuns) = (_sampled.Reader, _fullRuns.Reader);
        var batch = new List<ShadowRow>();
        try
        {
            while (true)
            {
                _rowsWaiting.Wait(_stop.Token);
                _running.Wait(_stop.Token);
                if (sampled.Count + fullRuns.Count < 64) _stop.Token.WaitHandle.WaitOne(TimeSpan.FromMilliseconds(100));
                // Reset before reading: a row handed over from here on sets it again.
                _rowsWaiting.Reset();
                batch.Clear();
                while (batch.Count < 64 && sampled.TryRead(out var row)) batch.Add(row);
                while (batch.Count < 64 && fullRuns.TryRead(out var row)) batch.Add(row);
                if (sampled.Count + fullRuns.Count > 0) _rowsWaiting.Set();
                var busySince = Stopwatch.GetTimestamp();
                // Rows served by the single graph carry their input: every cache layer is computed here. Rows that exited
                // early on the segment path carry the activations of their exit layer: the rest is. Rows that ran in full
                // on the segment path carry everything already.
                var groups = batch.Where(r => r.Input is not null).GroupBy(_ => -1)
                    .Concat(batch.Where(r => r.Input is null && r.BaseProbabilities is null).GroupBy(r => Array.IndexOf(_layers, r.ExitLayer)));
                var lost = new HashSet<ShadowRow>(ReferenceEqualityComparer.Instance);
                foreach (var group in groups)
                {
                    try
                    {
                        Continue(group.Key, group.ToArray());
                    }
                    catch (ObjectDisposedException)
                    {
                        // The engine of that generation was retired meanwhile: these rows are lost, the next ones are not.
                        lost.UnionWith(group);
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        // Never let a shadow row take the server down: count it, keep the reason, go on.
                        lost.UnionWith(group);
                        Interlocked.Add(ref _failed, group.Count());
                        Volatile.Write(ref _lastFailure, $"{ex.GetType().Name}: {ex.Message}");
                    }
                }
                // Completed in the batch's order (sampled rows first, each queue in order of arrival), however their work
                // was grouped: the window stays oldest first within each kind, and sampled rows are judged first.
                foreach (var row in batch)
                {
                    if (lost.Contains(row)) continue;
                    try
                    {
                        Complete(row);
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        Interlocked.Increment(ref _failed);
                        Volatile.Write(ref _lastFailure, $"{ex.GetType().Name}: {ex.Message}");
                    }
                }
                Interlocked.Add(ref _workerBusyTicks, Stopwatch.GetElapsedTime(busySince).Ticks);
                Interlocked.Add(ref _processed, batch.Count);
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        finally
        {
            _continuation?.Dispose();
        }
    }

    // The worker's own engine over the serving generation's base model and caches (worker thread only).
    private EarlyExitEngine? _continuation;
    private EarlyExitEngine? _continuationOf;

    /// <summary>
    /// The engine the worker computes on for <paramref name="serving"/>'s generation: its own sessions, on this thread
    /// alone (<see cref="EarlyExitEngine.CreateBackgroundWorker"/>), built on first need and again after each swap.
    /// </summary>
    private EarlyExitEngine ContinuationFor(EarlyExitEngine serving)
    {
        if (!ReferenceEquals(_continuationOf, serving))
        {
            _continuation?.Dispose();
            _continuation = null;
            _continuation = serving.CreateBackgroundWorker();
            _continuationOf = serving;
        }
        return _continuation!;
    }

    /// <summary>
    /// Runs rows on from where they stopped: the activations of cache <paramref name="exitSegment"/>, or, for -1, their
    /// input; fills in their later layers' features, P(hit), classes and base answer (the loop then completes them).
    /// </summary>
    private void Continue(int exitSegment, ShadowRow[] rows)
    {
        var engine = Engine;
        var source = rows.Select(r => exitSegment < 0 ? r.Input! : r.Features[exitSegment]!).ToArray();
        var size = source[0].Length;
        var activations = new float[rows.Length * size];
        for (var i = 0; i < rows.Length; i++) source[i].CopyTo(activations, i * size);
        var (features, hitProbabilities, predicted, baseProbabilities) = ContinuationFor(engine).ContinueToEnd(exitSegment, activations, rows.Length, StepAside);
        var classes = baseProbabilities.Length / rows.Length;
        // What the window keeps of each later layer, reduced straight from the engine's output: no row holds (or pins) a
        // copy of the full activations it would drop at once (KeepReduced).
        for (var i = 0; i < rows.Length; i++)
        {
            for (var k = 0; k < features.Length; k++)
            {
                var cache = exitSegment + 1 + k;
                var layer = engine.Caches[cache];
                var full = features[k].AsSpan(i * layer.InputSize, layer.InputSize);
                rows[i].Features[cache] = layer.ReduceRow(full);
                rows[i].HitProbabilities[cache] = hitProbabilities[k * rows.Length + i];
                rows[i].PredictedClasses[cache] = predicted[k * rows.Length + i];
            }
            // A full run served by the single graph already has the answer it was served.
            rows[i].BaseProbabilities ??= baseProbabilities.AsSpan(i * classes, classes).ToArray();
            rows[i].Input = null;
        }
    }

    private void Complete(ShadowRow row)
    {
        KeepReduced(row, Engine.Caches);
        Window.Add(row);
        Interlocked.Increment(ref _labelled);
        if (!row.Sampled) return;
        // Only rows served by the current engine under its current thresholds say anything about them.
        var engine = Engine;
        if (!ReferenceEquals(row.Engine, engine) || row.ThresholdVersion != engine.ThresholdVersion) return;
        Live.Add(Array.IndexOf(_layers, row.ExitLayer), row.Agreed == true);
        Interlocked.Increment(ref _judgedThisGeneration);
        Judge();
    }

    /// <summary>
    /// Replaces each cache's activation in a completed row by what its predictor reads after its parameter-free first step
    /// (Grid cells, 1-D pooling): all the updater trains on, and on the imported ResNet-18's Grid(4, 256) caches 1,024-2,048
    /// values a layer instead of 100,352-200,704, so a window of the same memory holds about a hundred times more rows.
    /// Generations share their caches' architectures and shapes (an update fine-tunes, it does not reshape).
    /// </summary>
    internal static void KeepReduced(ShadowRow row, IReadOnlyList<LearnedCache> caches)
    {
        for (var s = 0; s < row.Features.Length && s < caches.Count; s++)
        {
            if (row.Features[s] is not { } full || full.Length == caches[s].ReducedFeatureShape.Size) continue;
            row.Features[s] = caches[s].ReduceRow(full);
        }
    }

    /// <summary>
    /// Holds the shadow worker before its next batch until <see cref="Resume"/> (rows keep queueing, and are dropped and
    /// counted once the queue is full): a benchmark that interleaves these caches with others stops their background
    /// work while the others serve.
    /// </summary>
    internal void Pause() => _running.Reset();

    /// <summary>Lets the shadow worker go on after <see cref="Pause"/>.</summary>
    internal void Resume() => _running.Set();

    /// <summary>Stops the background continuation (pending rows are dropped) and detaches from the engine.</summary>
    public void Dispose()
    {
        _sampled.Writer.TryComplete();
        _fullRuns.Writer.TryComplete();
        _stop.Cancel();
        _worker.Join(TimeSpan.FromSeconds(30));
        Engine.Observer = null;
        _stop.Dispose();
        _running.Dispose();
        _rowsWaiting.Dispose();
    }

    private static Channel<ShadowRow> Pending() => Channel.CreateBounded<ShadowRow>(new BoundedChannelOptions(4096)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });
}
