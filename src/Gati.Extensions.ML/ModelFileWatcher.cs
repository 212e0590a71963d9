namespace Gati.Extensions.ML;

/// <summary>
/// Watches a model file: a change (editors and copies raise several events per change) asks for one reload after a
/// quiet period; a deletion is remembered (the generation in memory keeps serving, but a restart would fail).
/// </summary>
internal sealed class ModelFileWatcher : IDisposable
{
    private readonly string _path;
    private readonly double _debounceMs;
    private readonly Action _deleted;
    private readonly FileSystemWatcher _watcher;
    private readonly Timer _debounce;
    // UTC ticks (0: none), read by status calls on other threads: whole values, never torn.
    private long _missingTicks;

    /// <param name="path">The full path of the model file.</param>
    /// <param name="debounceMs">The quiet period before a reload.</param>
    /// <param name="reload">Runs on a timer thread after the quiet period.</param>
    /// <param name="deleted">Runs when the file was deleted or renamed away (after <see cref="MissingSince"/> is set).</param>
    public ModelFileWatcher(string path, double debounceMs, Action reload, Action deleted)
    {
        _path = path;
        _debounceMs = debounceMs;
        _deleted = deleted;
        _debounce = new Timer(_ => reload(), null, Timeout.Infinite, Timeout.Infinite);
        _watcher = new FileSystemWatcher(Path.GetDirectoryName(path)!, Path.GetFileName(path))
        {
            NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
        };
        _watcher.Changed += OnFileEvent;
        _watcher.Created += OnFileEvent;
        _watcher.Renamed += OnFileEvent;
        _watcher.Deleted += OnFileEvent;
        _watcher.EnableRaisingEvents = true;
    }

    /// <summary>When the file was deleted, until a load succeeds again (<see cref="Found"/>).</summary>
    public DateTimeOffset? MissingSince => Volatile.Read(ref _missingTicks) is var t && t != 0 ? new DateTimeOffset(t, TimeSpan.Zero) : null;

    /// <summary>The file was loaded again: it is no longer missing.</summary>
    public void Found() => Volatile.Write(ref _missingTicks, 0);

    private void OnFileEvent(object sender, FileSystemEventArgs e)
    {
        var gone = e.ChangeType == WatcherChangeTypes.Deleted
            || (e is RenamedEventArgs away && string.Equals(away.OldFullPath, _path, StringComparison.Ordinal) && !string.Equals(away.FullPath, _path, StringComparison.Ordinal));
        if (gone)
        {
            if (File.Exists(_path)) return;
            Volatile.Write(ref _missingTicks, DateTimeOffset.UtcNow.UtcTicks);
            _deleted();
            return;
        }
        if (e is RenamedEventArgs renamed && !string.Equals(renamed.FullPath, _path, StringComparison.Ordinal)) return;
        // Editors and copies raise several events per change: wait for a quiet period, then reload once.
        _debounce.Change(TimeSpan.FromMilliseconds(_debounceMs), Timeout.InfiniteTimeSpan);
    }

    public void Dispose()
    {
        _watcher.Dispose();
        _debounce.Dispose();
    }
}
