using System.Diagnostics;

namespace Gati.MLNet.Tests.Infrastructure;

/// <summary>Resident memory of this process around an action: before, at its peak during the action, and after.</summary>
/// <param name="BeforeBytes">Resident bytes when the action started (after a full collection).</param>
/// <param name="PeakBytes">The most resident bytes while it ran.</param>
/// <param name="AfterBytes">Resident bytes when it had finished.</param>
/// <param name="Method">How the peak was measured, for messages.</param>
public sealed record PeakMemory(long BeforeBytes, long PeakBytes, long AfterBytes, string Method)
{
    public long PeakGrowthBytes => PeakBytes - BeforeBytes;

    public override string ToString() =>
        $"resident {BeforeBytes >> 20} MB before, {PeakBytes >> 20} MB at the peak (+{PeakGrowthBytes >> 20} MB), {AfterBytes >> 20} MB after ({Method})";

    /// <summary>
    /// Runs <paramref name="action"/> and measures. On Linux the peak is the kernel's own high-water mark (VmHWM in
    /// /proc/self/status), reset to the current size first through /proc/self/clear_refs, so no short spike is missed;
    /// elsewhere resident memory is sampled every millisecond. Tests that use it must run alone (a non-parallel collection).
    /// </summary>
    public static async Task<PeakMemory> MeasureAsync(Func<Task> action)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        var before = Resident();
        if (TryResetHighWaterMark())
        {
            await action();
            return new PeakMemory(before, Math.Max(before, HighWaterMark()), Resident(), "VmHWM, reset before the action");
        }
        var peak = before;
        using var stop = new CancellationTokenSource();
        var sampler = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                peak = Math.Max(peak, Resident());
                Thread.Sleep(1);
            }
        });
        try
        {
            await action();
        }
        finally
        {
            await stop.CancelAsync();
            await sampler;
        }
        return new PeakMemory(before, Math.Max(peak, Resident()), Resident(), "resident memory sampled every millisecond");
    }

    private static long Resident()
    {
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }

    private static bool TryResetHighWaterMark()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return HighWaterMark() > 0;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static long HighWaterMark()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        return 0;
    }
}
