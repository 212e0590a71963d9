using System.Runtime.InteropServices;

namespace Gati.MLNet.Torch;

/// <summary>
/// Hands memory that native code has freed back to the operating system. glibc keeps freed blocks in its per-thread
/// arenas; a server that loads a model generation (libtorch weights, ONNX Runtime sessions and their arenas) on one
/// thread while many others allocate, then frees the old generation, keeps the freed pages resident, and its RSS
/// climbs with every hot reload although nothing leaks. <c>malloc_trim(0)</c> releases them. Elsewhere (musl, macOS,
/// Windows) this does nothing.
/// </summary>
internal static class NativeHeap
{
    private static int _unavailable;

    /// <summary>Returns free native heap pages to the system where the C library can; true if it released any.</summary>
    public static bool Trim()
    {
        if (!OperatingSystem.IsLinux() || Volatile.Read(ref _unavailable) != 0) return false;
        try
        {
            return MallocTrim(0) != 0;
        }
        catch (Exception ex) when (ex is EntryPointNotFoundException or DllNotFoundException)
        {
            Volatile.Write(ref _unavailable, 1); // not glibc
            return false;
        }
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);
}
