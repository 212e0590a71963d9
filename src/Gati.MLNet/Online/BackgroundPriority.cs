using System.Runtime.InteropServices;

namespace Gati.MLNet.Online;

/// <summary>
/// Puts the calling thread below request threads in the operating system's scheduler. On Linux, .NET ignores
/// <see cref="Thread.Priority"/>, so the thread is moved to the SCHED_IDLE policy and its nice value raised (both per
/// thread; an unprivileged thread may always lower itself). Under CFS a nice-10 thread still weighs 110 against a request
/// thread's 1,024, so on a 2-core machine whose requests run 2 threads each, every operator of a request shared a core
/// with the background thread for about a tenth of its time; a SCHED_IDLE thread weighs 3 and runs, in effect, when a
/// core has nothing else to do. The nice value stays as the fallback where SCHED_IDLE is refused. Elsewhere
/// <see cref="Thread.Priority"/> does the job.
/// </summary>
internal static class BackgroundPriority
{
    /// <summary>The nice value of background learning threads (0 is normal, 19 the lowest priority).</summary>
    internal const int Nice = 10;

    private const int PrioProcess = 0;

    /// <summary>Linux's SCHED_IDLE policy (sched.h).</summary>
    internal const int IdlePolicy = 5;

    /// <summary>Lowers the calling thread's priority; returns false where that could not be done (the thread runs on).</summary>
    public static bool Lower()
    {
        Thread.CurrentThread.Priority = ThreadPriority.BelowNormal;
        if (!OperatingSystem.IsLinux()) return true;
        try
        {
            // With PRIO_PROCESS, Linux takes a thread id for "who": only this thread changes; sched_setscheduler too.
            var tid = GetThreadId();
            var niced = SetPriority(PrioProcess, tid, Nice) == 0;
            var parameters = new SchedulingParameters { Priority = 0 }; // SCHED_IDLE takes static priority 0
            var idle = SetScheduler(tid, IdlePolicy, ref parameters) == 0;
            return niced || idle;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
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

    /// <summary>The calling thread's scheduling policy on Linux (<see cref="IdlePolicy"/> once lowered; null elsewhere or when it cannot be read).</summary>
    internal static int? Policy()
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

    [StructLayout(LayoutKind.Sequential)]
    private struct SchedulingParameters
    {
        public int Priority;
    }

    [DllImport("libc", EntryPoint = "sched_setscheduler", SetLastError = true)]
    private static extern int SetScheduler(int pid, int policy, ref SchedulingParameters parameters);

    [DllImport("libc", EntryPoint = "sched_getscheduler", SetLastError = true)]
    private static extern int GetScheduler(int pid);

    [DllImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    private static extern int SetPriority(int which, int who, int priority);

    [DllImport("libc", EntryPoint = "getpriority", SetLastError = true)]
    private static extern int GetPriority(int which, int who);

    [DllImport("libc", EntryPoint = "gettid")]
    private static extern int GetThreadId();
}
