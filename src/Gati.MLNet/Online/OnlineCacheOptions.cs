namespace Gati.MLNet.Online;

/// <summary>Settings of continuously updated caches (docs/online.md).</summary>
public sealed class OnlineCacheOptions
{
    /// <summary>Off switch: false serves the caches as they are, with no sampling and no updates.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Share of requests drawn uniformly as shadow rows (their exits are checked against the base model).</summary>
    public double SampleFraction { get; set; } = 0.1;

    /// <summary>
    /// Also keep every request that ran the whole network, as training rows for the updater (copied from the request, they
    /// cost a copy; after the plain single graph the worker recomputes their activations: <see cref="CopyActivationsOnRequest"/>). Ignored when <see cref="Updates"/> is off:
    /// these rows never enter the live agreement.
    /// </summary>
    public bool CaptureFullRuns { get; set; } = true;

    /// <summary>
    /// Share of the requests that ran the whole network kept as training rows (with <see cref="CaptureFullRuns"/>; drawn
    /// with <see cref="Seed"/> before each request, so that a row left out costs nothing). Full runs can be half of all
    /// requests (the imported ResNet-18): a kept one costs the shadow worker a whole forward pass where the worker
    /// recomputes activations, and a copy of every cache layer's activations (reduced on the request's thread) where
    /// requests copy them (<see cref="CopyActivationsOnRequest"/>). Keeping a quarter of them cuts that by three quarters,
    /// while the window still fills with current rows.
    /// </summary>
    public double FullRunFraction { get; set; } = 1;

    /// <summary>
    /// Where a kept row's activations come from when ONNX Runtime on the CPU would answer its request with the single
    /// graph (one input per call), which keeps them to itself. True: a request that is sampled, or whose full run would be
    /// kept, runs on the single graph's tapped form, one call that also outputs what each cache it reached saw, and keeps
    /// each cache layer's activations (reduced as the window keeps them, whole at the layer a sampled row exits at); the
    /// shadow worker then only continues sampled rows that exited early. Where the engine has no single graph such a
    /// request runs segment by segment. False: the request takes the plain single graph and hands over a copy of its
    /// input; the worker recomputes every cache layer from it, a whole forward pass per row beside serving. Null (the
    /// default) times a whole-network request both ways when the sampler starts and copies unless the tapped graph costs
    /// more than 25 % more. <see cref="ShadowSampler.ActivationSource"/> says which was chosen and why.
    /// </summary>
    public bool? CopyActivationsOnRequest { get; set; }

    /// <summary>
    /// Background work waits while a request is being served: the shadow worker before each segment it runs, the updater
    /// before each training step, each for at most 50 ms at a time (so that rows still get completed on a server that is
    /// never idle). Off by default: on the imported ResNet-18 at 25 requests a second on 2 cores it did not make the
    /// online turns' requests measurably faster (docs/benchmarks.md). Off, only its lower priority keeps background
    /// work apart from requests.
    /// </summary>
    public bool StepAsideForRequests { get; set; }

    /// <summary>Memory for the sliding window of shadow rows, in megabytes.</summary>
    public double WindowMegabytes { get; set; } = 256;

    /// <summary>
    /// Overall agreement with the base model (over all requests; those that run the whole network agree) that the served
    /// caches must keep at <see cref="Confidence"/>: judged live, and set by updates, with the exact (Clopper-Pearson)
    /// bound (docs/early-exit.md, "Which promise each component keeps").
    /// </summary>
    public double AgreementTarget { get; set; } = 0.99;

    /// <summary>One-sided confidence of the live bounds and of the thresholds an update calibrates.</summary>
    public double Confidence { get; set; } = 0.95;

    /// <summary>Sampled outcomes the live agreement is computed over (sliding), overall and per cache.</summary>
    public int LiveWindow { get; set; } = 2000;

    /// <summary>
    /// When live agreement makes the sampler react (docs/online.md#live-agreement-and-reactions).
    /// <see cref="ReactionTrigger.Drop"/> (the default) reacts on evidence that the target is missed, and when the
    /// estimate falls below the target after the sample had shown it kept; <see cref="ReactionTrigger.LowerBound"/>
    /// reacts whenever the sample cannot show that the target is kept, and so also tightens caches whose agreement is
    /// only a little above it, on every chance disagreement over a short window; <see cref="ReactionTrigger.UpperBound"/>
    /// reacts only on evidence that the target is missed, and so later to a small shortfall.
    /// </summary>
    public ReactionTrigger ReactOn { get; set; } = ReactionTrigger.Drop;

    /// <summary>
    /// Watch where sampled requests exit for a change of traffic (docs/online.md, "Changes of traffic"): once the exit mix of the newest 150 sampled requests lies far from that of the 200 before them, the
    /// sampled requests since the change are judged on their own as well, and a reaction they fire sets the thresholds on
    /// them alone. A live window mostly from before a change of camera showed its shortfall only after thousands of
    /// requests; false: judge the live window alone.
    /// </summary>
    public bool WatchExitMix { get; set; } = true;

    /// <summary>
    /// Fewest sampled requests before live agreement is judged; raised, when reacting on the lower bound, to
    /// about the fewest whose perfect record clears the target at the confidence (the search steps by 5 %: 302 for 99 %
    /// at 95 %, where the fewest is 299), below which every judgement would fail.
    /// </summary>
    public int MinimumExits { get; set; } = 100;

    /// <summary>Fine-tune and recalibrate in the background (false: only watch and react).</summary>
    public bool Updates { get; set; } = true;

    /// <summary>New labelled rows in the window between update attempts.</summary>
    public int UpdateEveryRows { get; set; } = 1500;

    /// <summary>
    /// The most recent labelled rows of the window an update fine-tunes and calibrates on: every other row of the uniform
    /// sample calibrates (so both halves reach the newest traffic, and the thresholds are certified on the traffic's mix),
    /// the other sampled rows and the kept full runs train. Bounds an update's work however many rows the window holds,
    /// and keeps it on current traffic.
    /// </summary>
    public int UpdateRows { get; set; } = 4000;

    /// <summary>
    /// Newest sampled training rows of an update (the traffic's class mix; kept full runs are not) on which each
    /// predictor's class-prior correction is fitted
    /// (<see cref="ClassPriorShift"/>; docs/online.md, "Specialising to the window"): few enough to follow a change of the
    /// popular classes within a phase, enough to estimate ten or so class offsets. 0 turns the correction off.
    /// </summary>
    public int ClassPriorRows { get; set; } = 150;

    /// <summary>Fresh sampled rows (arrived after the candidate was trained) a candidate is validated on.</summary>
    public int ValidationRows { get; set; } = 300;

    /// <summary>Epochs of fine-tuning per update (from the current weights).</summary>
    public int Epochs { get; set; } = 3;

    /// <summary>Learning rate of fine-tuning (a tenth of offline training's).</summary>
    public double LearningRate { get; set; } = 0.005;

    /// <summary>
    /// Share of one core the updater may use (it sleeps between training steps to stay within it); its work is
    /// single-threaded.
    /// </summary>
    public double CpuBudget { get; set; } = 0.5;

    /// <summary>Seed of the sampling and of fine-tuning.</summary>
    public int Seed { get; set; }

    internal OnlineCacheOptions Clone() => (OnlineCacheOptions)MemberwiseClone();

    internal void Validate()
    {
        if (SampleFraction is < 0 or > 1 || double.IsNaN(SampleFraction)) throw new ArgumentOutOfRangeException(nameof(SampleFraction), SampleFraction, "Must be in [0, 1].");
        if (!(WindowMegabytes > 0)) throw new ArgumentOutOfRangeException(nameof(WindowMegabytes), WindowMegabytes, "Must be positive.");
        if (AgreementTarget is <= 0 or > 1 || double.IsNaN(AgreementTarget)) throw new ArgumentOutOfRangeException(nameof(AgreementTarget), AgreementTarget, "Must be in (0, 1].");
        if (Confidence is <= 0.5 or >= 1 || double.IsNaN(Confidence)) throw new ArgumentOutOfRangeException(nameof(Confidence), Confidence, "Must be in (0.5, 1).");
        if (LiveWindow < 10) throw new ArgumentOutOfRangeException(nameof(LiveWindow), LiveWindow, "At least 10.");
        if (!Enum.IsDefined(ReactOn)) throw new ArgumentOutOfRangeException(nameof(ReactOn), ReactOn, "Unknown reaction trigger.");
        if (MinimumExits < 1) throw new ArgumentOutOfRangeException(nameof(MinimumExits), MinimumExits, "Must be positive.");
        if (UpdateEveryRows < 10) throw new ArgumentOutOfRangeException(nameof(UpdateEveryRows), UpdateEveryRows, "At least 10.");
        if (FullRunFraction is < 0 or > 1 || double.IsNaN(FullRunFraction)) throw new ArgumentOutOfRangeException(nameof(FullRunFraction), FullRunFraction, "Must be in [0, 1].");
        if (UpdateRows < CacheUpdater.MinimumRows)
            throw new ArgumentOutOfRangeException(nameof(UpdateRows), UpdateRows, $"At least {CacheUpdater.MinimumRows}: half of the sampled ones to calibrate on, the rest to fine-tune on.");
        if (ClassPriorRows < 0) throw new ArgumentOutOfRangeException(nameof(ClassPriorRows), ClassPriorRows, "Must not be negative (0 turns the correction off).");
        if (ValidationRows < 10) throw new ArgumentOutOfRangeException(nameof(ValidationRows), ValidationRows, "At least 10.");
        if (Epochs < 1) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "At least one.");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Must be positive.");
        if (CpuBudget is <= 0 or > 1 || double.IsNaN(CpuBudget)) throw new ArgumentOutOfRangeException(nameof(CpuBudget), CpuBudget, "Must be in (0, 1].");
    }
}

/// <summary>The bound of live agreement whose fall below the target triggers a reaction.</summary>
public enum ReactionTrigger
{
    /// <summary>React when the lower bound is below the target: the sample cannot show that the target is kept.</summary>
    LowerBound,

    /// <summary>React when even the upper bound is below the target: the sample shows that the target is missed.</summary>
    UpperBound,

    /// <summary>
    /// React when the upper bound is below the target (the sample shows it missed), and also, once the lower bound has
    /// shown the target kept on enough requests served by the current generation that half the allowed disagreements
    /// would still clear it, when the estimate falls below the target: a drift away from a state shown good is acted on as soon as
    /// the sample points to a miss, while caches only a little above the target are not tightened on every chance
    /// disagreement, as <see cref="LowerBound"/> does.
    /// </summary>
    Drop,
}
