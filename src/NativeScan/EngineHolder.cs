namespace Portcullis.NativeScan;

// The engine new scans use. A reload builds the next engine elsewhere and swaps it in; the
// previous one is disposed at once and freed by its handle's reference count when the last
// scan still running on it returns (clamd's engine lifecycle). A low-memory reload unloads the
// engine before building the next one; scans that start in between fail with an error.
public sealed class EngineHolder : IDisposable
{
    private ScanEngine? current;
    private volatile bool disposed;

    // No engine yet (the first start before freshclam): scans fail until Swap loads one.
    public EngineHolder()
    {
    }

    public EngineHolder(ScanEngine initial)
    {
        ArgumentNullException.ThrowIfNull(initial);
        current = initial;
    }

    // The engine in use; throws while none is loaded (see IsLoaded).
    public ScanEngine Current => Volatile.Read(ref current) ?? throw new InvalidOperationException(NoEngine);

    public bool IsLoaded => Volatile.Read(ref current) is not null;

    public bool TryGetCurrent(out ScanEngine engine)
    {
        engine = Volatile.Read(ref current)!;
        return engine is not null;
    }

    public void Swap(ScanEngine next)
    {
        ArgumentNullException.ThrowIfNull(next);
        ObjectDisposedException.ThrowIf(disposed, this);
        var previous = Interlocked.Exchange(ref current, next);
        if (previous is not null && !ReferenceEquals(previous, next))
        {
            previous.Dispose();
        }
    }

    // Leaves no engine loaded and disposes the one there was (freed when its last scan ends);
    // returns it so the caller can wait for ScanEngine.Freed.
    public ScanEngine? Unload()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var previous = Interlocked.Exchange(ref current, null);
        previous?.Dispose();
        return previous;
    }

    public void Dispose()
    {
        disposed = true;
        Volatile.Read(ref current)?.Dispose();
    }

    // The current engine with a reference taken; the caller calls Release. A swap may dispose
    // the engine between reading Current and retaining it: then the next read sees its successor.
    internal ScanEngine Retain()
    {
        while (true)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            var engine = Volatile.Read(ref current) ?? throw new InvalidOperationException(NoEngine);
            if (engine.TryRetain())
            {
                return engine;
            }
        }
    }

    private const string NoEngine = "no signatures are loaded";
}
