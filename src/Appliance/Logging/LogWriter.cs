// Every log line of the running daemon (stderr) and of the message log (stdout and [log] folder)
// goes through one bounded channel to one writer thread: a session formats its line, enqueues it
// and goes on; it never writes or flushes a stream, and never waits for one.
//
// Channel full (the journal, the terminal or the disk has fallen Capacity lines behind): the new
// line is dropped and counted rather than waited for, so a stalled log cannot stall mail. As soon
// as the writer catches up it writes one warning saying how many lines were dropped; /metrics has
// the total (portcullis_log_lines_dropped_total).
// Shutdown: Complete() stops intake, writes everything still queued, flushes, and returns (within
// its timeout). Lines logged after that, or while no writer runs (the CLI verbs), are written
// directly by the caller.
using System.Threading.Channels;

namespace Portcullis.Appliance.Logging;

// Where a queued line ends up: stderr for daemon lines, a MessageLog for message lines.
internal interface ILogTarget
{
    // Called on the writer thread (or by the caller when no writer runs); the target locks itself.
    void WriteLine(ReadOnlySpan<char> text, DateTimeOffset time);

    void Flush();
}

public sealed class LogWriter
{
    public const int DefaultCapacity = 8192;

    private static LogWriter? current;

    private readonly Channel<Item> channel;
    private readonly Thread thread;
    private readonly ILogTarget dropReport;
    private long dropped;
    private long droppedTotal;

    internal LogWriter(int capacity, ILogTarget dropReport)
    {
        this.dropReport = dropReport;
        channel = Channel.CreateBounded<Item>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait, // TryWrite then fails instead of blocking
        });
        thread = new Thread(Run) { IsBackground = true, Name = "portcullis log writer" };
        thread.Start();
    }

    // The daemon's writer; null while none runs (the CLI verbs write directly).
    public static LogWriter? Current => Volatile.Read(ref current);

    public long DroppedTotal => Interlocked.Read(ref droppedTotal);

    // Starts the process's writer (the daemon calls this first thing).
    public static LogWriter Start(int capacity = DefaultCapacity)
    {
        var writer = new LogWriter(capacity, Log.Stderr);
        Volatile.Write(ref current, writer);
        return writer;
    }

    // Queued, or dropped because the channel is full: true. False only once the writer has been
    // completed; then the caller writes the line itself.
    internal bool Enqueue(ILogTarget target, string text, DateTimeOffset time) =>
        Enqueue(new Item(target, text, null, 0, time, null));

    // The same for a line in an ArrayPool<char>.Shared array (its first length characters), which
    // the writer returns once written or dropped; false: the caller still owns it.
    internal bool EnqueueRented(ILogTarget target, char[] line, int length, DateTimeOffset time) =>
        Enqueue(new Item(target, null, line, length, time, null));

    private bool Enqueue(Item item)
    {
        if (channel.Writer.TryWrite(item))
        {
            return true;
        }

        if (channel.Reader.Completion.IsCompleted || completing)
        {
            return false;
        }

        Interlocked.Increment(ref dropped);
        Interlocked.Increment(ref droppedTotal);
        if (item.Rented is not null)
        {
            System.Buffers.ArrayPool<char>.Shared.Return(item.Rented);
        }

        return true;
    }

    // Waits until every line queued before this call has been written and flushed.
    public bool Flush(TimeSpan timeout)
    {
        using var done = new ManualResetEventSlim();
        try
        {
            using var cancel = new CancellationTokenSource(timeout);
            channel.Writer.WriteAsync(new Item(null, "", null, 0, default, done), cancel.Token).AsTask().GetAwaiter().GetResult();
            return done.Wait(timeout);
        }
        catch (Exception e) when (e is OperationCanceledException or ChannelClosedException)
        {
            return false;
        }
    }

    // Stops intake and drains the queue; true when everything was written within the timeout.
    public bool Complete(TimeSpan timeout)
    {
        completing = true;
        channel.Writer.TryComplete();
        var drained = thread.Join(timeout);
        Interlocked.CompareExchange(ref current, null, this);
        return drained;
    }

    private volatile bool completing;

    // After writing, the writer lets lines gather this long before it looks again: a busy gateway
    // logs a line per message, and one wake-up and one flush per batch cost less than one per line.
    private static readonly TimeSpan GatherPause = TimeSpan.FromMilliseconds(10);

    private void Run()
    {
        var reader = channel.Reader;
        var touched = new HashSet<ILogTarget>(ReferenceEqualityComparer.Instance);
        while (WaitForLines(reader))
        {
            while (reader.TryRead(out var item))
            {
                if (item.Done is not null)
                {
                    ReportDropped(touched);
                    FlushAll(touched);
                    item.Done.Set();
                    continue;
                }

                if (item.Rented is { } rented)
                {
                    WriteSafely(item.Target!, rented.AsSpan(0, item.Length), item.Time);
                    System.Buffers.ArrayPool<char>.Shared.Return(rented);
                }
                else
                {
                    WriteSafely(item.Target!, item.Text, item.Time);
                }

                touched.Add(item.Target!);
            }

            ReportDropped(touched);
            FlushAll(touched);
            if (!completing)
            {
                Thread.Sleep(GatherPause);
            }
        }

        ReportDropped(touched);
        FlushAll(touched);
    }

    // Blocks until a line is queued (true) or the channel is completed and empty (false), asleep:
    // Task.Wait would spin the thread first (sched_yield), costing a busy 2-core box CPU per line.
    private static bool WaitForLines(ChannelReader<Item> reader)
    {
        var wait = reader.WaitToReadAsync();
        if (wait.IsCompletedSuccessfully)
        {
            return wait.Result;
        }

        using var task = wait.AsTask();   // disposed once complete: its wait handle goes with it
        ((IAsyncResult)task).AsyncWaitHandle.WaitOne();
        return task.GetAwaiter().GetResult();
    }

    private void ReportDropped(HashSet<ILogTarget> touched)
    {
        var count = Interlocked.Exchange(ref dropped, 0);
        if (count == 0)
        {
            return;
        }

        WriteSafely(dropReport, Log.FormatLine(LogLevel.Warning,
            $"{count} log line(s) dropped: the log channel was full ({channel.Reader.Count} queued); stderr, stdout or the [log] folder could not keep up",
            Log.ToJournal), DateTimeOffset.Now);
        touched.Add(dropReport);
    }

    // A log that cannot be written has nowhere to report that; the message log reports its
    // folder problems itself.
    private static void WriteSafely(ILogTarget target, ReadOnlySpan<char> text, DateTimeOffset time)
    {
        try
        {
            target.WriteLine(text, time);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
        {
        }
    }

    private static void FlushAll(HashSet<ILogTarget> touched)
    {
        foreach (var target in touched)
        {
            try
            {
                target.Flush();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
            }
        }

        touched.Clear();
    }

    // A line is Text, or the first Length characters of Rented (see EnqueueRented).
    private readonly record struct Item(ILogTarget? Target, string? Text, char[]? Rented, int Length, DateTimeOffset Time, ManualResetEventSlim? Done);
}
