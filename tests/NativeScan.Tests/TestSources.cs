namespace Portcullis.NativeScan.Tests;

// A message held as many small segments, as the gateway's pooled buffer holds it. Reads stop at
// a segment boundary, so the pread callback has to stitch short reads together.
public sealed class SegmentedSource : IScanSource
{
    private readonly byte[][] segments;
    private readonly int segmentSize;

    public SegmentedSource(ReadOnlySpan<byte> content, int segmentSize)
    {
        this.segmentSize = segmentSize;
        Length = content.Length;
        segments = new byte[(content.Length + segmentSize - 1) / segmentSize][];
        for (var i = 0; i < segments.Length; i++)
        {
            var start = i * segmentSize;
            segments[i] = content.Slice(start, Math.Min(segmentSize, content.Length - start)).ToArray();
        }
    }

    public long Length { get; }

    public int Reads { get; private set; }

    public int Read(long offset, Span<byte> destination)
    {
        Reads++;
        if (offset >= Length)
        {
            return 0;
        }

        var segment = segments[offset / segmentSize];
        var within = (int)(offset % segmentSize);
        var count = Math.Min(destination.Length, segment.Length - within);
        segment.AsSpan(within, count).CopyTo(destination);
        return count;
    }
}

// Blocks the first Read until the test opens the gate, so a scan is deterministically in flight
// (and the scanner thread busy) for as long as the test needs.
public sealed class GatedSource : IScanSource
{
    private readonly IScanSource inner;
    private readonly ManualResetEventSlim gate = new();
    private readonly TaskCompletionSource entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public GatedSource(IScanSource inner)
    {
        this.inner = inner;
    }

    public GatedSource(byte[] content)
        : this(new SegmentedSource(content, 4096))
    {
    }

    public long Length => inner.Length;

    // Completes when a scanner is inside Read, waiting on the gate.
    public Task Entered => entered.Task;

    public string? ReaderThread { get; private set; }

    public void Open() => gate.Set();

    public int Read(long offset, Span<byte> destination)
    {
        ReaderThread ??= Thread.CurrentThread.Name;
        entered.TrySetResult();
        if (!gate.Wait(TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException("the test never opened the gate");
        }

        return inner.Read(offset, destination);
    }
}

// Reads fail (an exception, or no bytes where Length promised some): libclamav must get -1 or a
// short read from the callback, never a managed exception, and the verdict must not be Clean.
public sealed class FailingSource(bool throws) : IScanSource
{
    public long Length => 10_000;

    public int Read(long offset, Span<byte> destination) =>
        throws ? throw new IOException("spill file vanished") : 0;
}
