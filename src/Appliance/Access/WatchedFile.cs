using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Access;

// A file that other programs rewrite (tcprules, a POP server's hook): parsed again when its
// modification time (100 ns resolution on Linux file systems) or size changes, checked at most every `recheck`. A file that
// fails to parse later keeps the last good version (logged); one that disappears reads as `missing`.
internal sealed class WatchedFile<T> where T : class
{
    private readonly string _path;
    private readonly Func<string, DateTimeOffset, T> _load;   // (path, modification time)
    private readonly T _missing;
    private readonly TimeSpan _recheck;
    private readonly Lock _lock = new();
    private (DateTime Mtime, long Length) _stamp;
    private long _checkedAt;
    private T _current;

    public WatchedFile(string path, Func<string, DateTimeOffset, T> load, T missing, TimeSpan recheck)
    {
        _path = path;
        _load = load;
        _missing = missing;
        _recheck = recheck;
        _current = missing;
        Refresh(initial: true);
    }

    public string Path => _path;

    public T Current
    {
        get
        {
            lock (_lock)
            {
                if (_recheck <= TimeSpan.Zero || System.Diagnostics.Stopwatch.GetElapsedTime(_checkedAt) >= _recheck) Refresh(initial: false);
                return _current;
            }
        }
    }

    // At start-up a file that exists but cannot be parsed is a configuration error (thrown).
    private void Refresh(bool initial)
    {
        _checkedAt = System.Diagnostics.Stopwatch.GetTimestamp();
        var info = new FileInfo(_path);
        if (!info.Exists)
        {
            _stamp = default;
            _current = _missing;
            return;
        }
        var stamp = (info.LastWriteTimeUtc, info.Length);
        if (!initial && stamp == _stamp) return;
        try
        {
            _current = _load(_path, new DateTimeOffset(info.LastWriteTimeUtc));
            _stamp = stamp;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or InvalidDataException)
        {
            if (initial) throw new InvalidDataException($"{_path}: {e.Message}", e);
            _stamp = stamp;
            Log.Warn($"{_path}: not reloaded, keeping the previous version: {e.Message}");
        }
    }
}

internal static class FileText
{
    // Text files from other programs: bytes as Latin-1, so nothing fails to decode.
    public static string Read(string path) => File.ReadAllText(path, System.Text.Encoding.Latin1);
}
