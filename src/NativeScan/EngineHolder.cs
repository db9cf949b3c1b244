namespace Portcullis.NativeScan;

// The engine new scans use. A reload builds the next engine elsewhere and swaps it in; the
// previous one is disposed at once and freed by its handle's reference count when the last
// scan still running on it returns (clamd's engine lifecycle).
public sealed class EngineHolder : IDisposable
{
    private ScanEngine current;
    private volatile bool disposed;

    public EngineHolder(ScanEngine initial)
    {
        ArgumentNullException.ThrowIfNull(initial);
        current = initial;
    }

    public ScanEngine Current => Volatile.Read(ref current);

    public void Swap(ScanEngine next)
    {
        ArgumentNullException.ThrowIfNull(next);
        ObjectDisposedException.ThrowIf(disposed, this);
        var previous = Interlocked.Exchange(ref current, next);
        if (!ReferenceEquals(previous, next))
        {
            previous.Dispose();
        }
    }

    public void Dispose()
    {
        disposed = true;
        Current.Dispose();
    }

    // The current engine with a reference taken; the caller calls Release. A swap may dispose
    // the engine between reading Current and retaining it: then the next read sees its successor.
    internal ScanEngine Retain()
    {
        while (true)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            var engine = Current;
            if (engine.TryRetain())
            {
                return engine;
            }
        }
    }
}
