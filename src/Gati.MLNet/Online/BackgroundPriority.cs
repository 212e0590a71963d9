using System.Runtime.InteropServices;

namespace Gati.MLNet.Online;

/// <summary>How the threads of online caches' background work (the shadow worker, the updater) yield to requests.</summary>
public enum BackgroundScheduling
{
    /// <summary>
    /// Linux's idle scheduling class (SCHED_IDLE) on top of a raised nice value: the thread runs only on a core that
    /// nothing else wants, and a request thread that wakes takes its core at once. Elsewhere, or where the class cannot
    /// be set, <see cref="LowPriority"/>.
    /// </summary>
    IdleCores,

    /// <summary>
    /// A raised nice value (10) on Linux, <see cref="ThreadPriority.BelowNormal"/> elsewhere: the scheduler favours
    /// requests, but a background thread that holds a core keeps it for a slice of a few milliseconds when a request
    /// thread wakes.
    /// </summary>
    LowPriority,
}

/// <summary>
/// Puts the calling thread below request threads in the operating system's scheduler. On Linux, .NET ignores
/// <see cref="Thread.Priority"/>, so the thread's nice value is raised (per thread on Linux; an unprivileged process may
/// always raise it) and, for <see cref="BackgroundScheduling.IdleCores"/>, its policy set to SCHED_IDLE (an unprivileged
/// thread may always switch to it). Elsewhere <see cref="Thread.Priority"/> does the job.
/// </summary>
internal static class BackgroundPriority
{
    /// <summary>The nice value of background learning threads (0 is normal, 19 the lowest priority).</summary>
    internal const int Nice = 10;

    private const int PrioProcess = 0;

    /// <summary>Linux's SCHED_IDLE policy number.</summary>
    internal const int SchedIdle = 5;

    /// <summary>
    /// Lowers the calling thread's priority as <paramref name="scheduling"/> says; returns what was applied, or null
    /// where nothing could be done on Linux (the thread runs on at normal priority).
    /// </summary>
    public static BackgroundScheduling? Lower(BackgroundScheduling scheduling)
    {
        if (!Enum.IsDefined(scheduling)) throw new ArgumentOutOfRangeException(nameof(scheduling), scheduling, "Unknown background scheduling.");
        Thread.CurrentThread.Priority = ThreadPriority.BelowNormal;
        if (!OperatingSystem.IsLinux()) return BackgroundScheduling.LowPriority;
        try
        {
            // With PRIO_PROCESS (and sched_setscheduler), Linux takes a thread id for "who": only this thread changes.
            var tid = GetThreadId();
            var niced = SetPriority(PrioProcess, tid, Nice) == 0;
            if (scheduling == BackgroundScheduling.IdleCores)
            {
                var parameters = 0; // struct sched_param { int sched_priority; }: 0 for SCHED_IDLE
                if (SetScheduler(tid, SchedIdle, ref parameters) == 0) return BackgroundScheduling.IdleCores;
            }
            return niced ? BackgroundScheduling.LowPriority : null;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>The calling thread's nice value on Linux (null elsewhere or when it cannot be read).</summary>
    internal static int? Current()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            Marshal.SetLastPInvokeError(0);
            var value = GetPriority(PrioProcess, GetThreadId());
            return value == -1 && Marshal.GetLastPInvokeError() != 0 ? null : value;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>The calling thread's scheduling policy on Linux (0 normal, 5 idle; null elsewhere or when it cannot be read).</summary>
    internal static int? CurrentPolicy()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            var policy = GetScheduler(GetThreadId());
            return policy < 0 ? null : policy;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    [DllImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    private static extern int SetPriority(int which, int who, int priority);

    [DllImport("libc", EntryPoint = "getpriority", SetLastError = true)]
    private static extern int GetPriority(int which, int who);

    [DllImport("libc", EntryPoint = "sched_setscheduler", SetLastError = true)]
    private static extern int SetScheduler(int pid, int policy, ref int parameters);

    [DllImport("libc", EntryPoint = "sched_getscheduler", SetLastError = true)]
    private static extern int GetScheduler(int pid);

    [DllImport("libc", EntryPoint = "gettid")]
    private static extern int GetThreadId();
}
