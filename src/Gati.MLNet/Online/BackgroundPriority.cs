using System.Runtime.InteropServices;

namespace Gati.MLNet.Online;

/// <summary>
/// Puts the calling thread below request threads in the operating system's scheduler. On Linux, .NET ignores
/// <see cref="Thread.Priority"/>, so the thread's nice value is raised instead (per thread on Linux; an unprivileged
/// process may always raise it). Elsewhere <see cref="Thread.Priority"/> does the job.
/// </summary>
internal static class BackgroundPriority
{
    /// <summary>The nice value of background learning threads (0 is normal, 19 the lowest priority).</summary>
    internal const int Nice = 10;

    private const int PrioProcess = 0;

    /// <summary>Lowers the calling thread's priority; returns false where that could not be done (the thread runs on).</summary>
    public static bool Lower()
    {
        Thread.CurrentThread.Priority = ThreadPriority.BelowNormal;
        if (!OperatingSystem.IsLinux()) return true;
        try
        {
            // With PRIO_PROCESS, Linux takes a thread id for "who": only this thread changes.
            return SetPriority(PrioProcess, GetThreadId(), Nice) == 0;
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

    [DllImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    private static extern int SetPriority(int which, int who, int priority);

    [DllImport("libc", EntryPoint = "getpriority", SetLastError = true)]
    private static extern int GetPriority(int which, int who);

    [DllImport("libc", EntryPoint = "gettid")]
    private static extern int GetThreadId();
}
