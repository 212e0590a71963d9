using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Gati.MLNet.ModelFormat;

namespace Gati.MLNet.Torch;

/// <summary>
/// Remembers, per machine and native runtime, what the child-process probe of the numerics check decided for a set of
/// cases ("full": the full instruction set is right; else the cap that made it right), so that later processes skip
/// the children and only run the in-process check (docs/torchsharp-runtime.md#cpu-numerics).
/// </summary>
internal interface INumericsVerdictStore
{
    /// <summary>The verdict stored for <paramref name="key"/>, or null.</summary>
    string? Get(string key);

    /// <summary>Stores a verdict (best effort: a store that cannot write keeps nothing).</summary>
    void Set(string key, string verdict);

    /// <summary>Forgets a verdict (the in-process check contradicted it).</summary>
    void Remove(string key);
}

/// <summary>
/// A JSON file under the user's cache folder (<c>$XDG_CACHE_HOME/gati</c> or <c>~/.cache/gati</c>; the
/// <c>GATI_NUMERICS_CACHE</c> variable names another file, or <c>off</c>). Keys are salted with the CPU (model and
/// flags) and the libtorch library loaded, so a verdict never travels to another machine or runtime. Unreadable or
/// corrupt files are ignored; writes are atomic.
/// </summary>
internal sealed class FileVerdictStore(string path, string machine) : INumericsVerdictStore
{
    private readonly object _gate = new();

    /// <summary>The store for this machine, or null when switched off or no cache folder exists.</summary>
    public static FileVerdictStore? ForThisMachine(string nativeRuntime)
    {
        var setting = Environment.GetEnvironmentVariable("GATI_NUMERICS_CACHE")?.Trim();
        if (string.Equals(setting, "off", StringComparison.OrdinalIgnoreCase)) return null;
        var path = setting;
        if (string.IsNullOrEmpty(path))
        {
            var root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            if (string.IsNullOrEmpty(root))
            {
                var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
                if (string.IsNullOrEmpty(home)) return null;
                root = System.IO.Path.Combine(home, ".cache");
            }
            path = System.IO.Path.Combine(root, "gati", "numerics-verdicts.json");
        }
        return new FileVerdictStore(path, Machine(nativeRuntime));
    }

    public string Path { get; } = path;

    public string? Get(string key)
    {
        lock (_gate) return Read().GetValueOrDefault(Salt(key));
    }

    public void Set(string key, string verdict) => Update(entries => entries[Salt(key)] = verdict);

    public void Remove(string key) => Update(entries => entries.Remove(Salt(key)));

    private void Update(Action<Dictionary<string, string>> change)
    {
        lock (_gate)
        {
            try
            {
                var entries = Read();
                change(entries);
                Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
                AtomicFile.WriteAllText(Path, JsonSerializer.Serialize(entries));
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // A read-only home keeps nothing: the next process probes again.
            }
        }
    }

    private Dictionary<string, string> Read()
    {
        try
        {
            return File.Exists(Path) ? JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(Path)) ?? [] : [];
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or JsonException)
        {
            return [];
        }
    }

    private string Salt(string key) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(machine + "\n" + key)));

    /// <summary>CPU model and flags (Linux), and the native runtime (path, size and time of the libtorch loaded).</summary>
    private static string Machine(string nativeRuntime)
    {
        var cpu = new StringBuilder(Environment.ProcessorCount.ToString(System.Globalization.CultureInfo.InvariantCulture));
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo").Where(l => l.StartsWith("model name", StringComparison.Ordinal) || l.StartsWith("flags", StringComparison.Ordinal)).Distinct())
                    cpu.Append('\n').Append(line);
        }
        catch (IOException)
        {
        }
        return cpu + "\n" + nativeRuntime;
    }
}
