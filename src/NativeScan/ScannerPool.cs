using Microsoft.Win32.SafeHandles;

namespace Portcullis.NativeScan;

// A fixed set of dedicated scanner threads fed by a FIFO queue. Admission: a job waits for a
// thread for at most its own timeout, which runs from TryEnqueue (the wait counts against it);
// one that times out while queued is answered then and skipped, never scanned. The queue has no
// bound of its own: what feeds it is bounded already (one message per SMTP session, sessions by
// max_connections, message memory by the gateway's budget), and refusing a message that has been
// received in full saves nothing. queueCapacity > 0 is an optional hard cap on waiting jobs
// (past it TryEnqueue returns false and the gateway answers 451 4.3.2); 0 means none.
// Each job scans with the holder's engine as of the moment the job starts. Hold stops the
// threads from starting queued jobs (a low-memory reload frees the engine meanwhile); queued
// jobs wait, their timeouts still running.
public sealed class ScannerPool : IDisposable
{
    private readonly EngineHolder holder;
    // 0: no cap (see above).
    private readonly int capacity;
    private readonly Queue<ScanTicket> queue = new();
    // A plain monitor, not System.Threading.Lock: scanner threads Monitor.Wait on it.
    private readonly object gate = new();
    private readonly Thread[] threads;
    private readonly List<TaskCompletionSource> idleWaiters = [];
    private int busy;
    private bool stopping;
    private bool held;
    private long lastFinished = Environment.TickCount64;
    private long finishedCount;

    public ScannerPool(EngineHolder holder, int threadCount, int queueCapacity)
    {
        ArgumentNullException.ThrowIfNull(holder);
        ArgumentOutOfRangeException.ThrowIfLessThan(threadCount, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(queueCapacity);
        this.holder = holder;
        capacity = queueCapacity;
        threads = new Thread[threadCount];
        for (var i = 0; i < threadCount; i++)
        {
            threads[i] = new Thread(RunScanner) { IsBackground = true, Name = $"scanner-{i + 1}" };
            threads[i].Start();
        }
    }

    // Jobs waiting for a scanner thread.
    public int QueueDepth
    {
        get
        {
            lock (gate)
            {
                return queue.Count;
            }
        }
    }

    // Scanner threads running a scan.
    public int Busy => Volatile.Read(ref busy);

    public int ThreadCount => threads.Length;

    public bool IsHeld
    {
        get
        {
            lock (gate)
            {
                return held;
            }
        }
    }

    // Environment.TickCount64 when a job last finished (or the pool started): the watchdog's
    // evidence that scanner threads are not stuck.
    public long LastFinishedTicks => Interlocked.Read(ref lastFinished);

    public long FinishedCount => Interlocked.Read(ref finishedCount);

    // Queued jobs stay queued until Resume; jobs already running go on.
    public void Hold()
    {
        lock (gate)
        {
            held = true;
        }
    }

    public void Resume()
    {
        lock (gate)
        {
            held = false;
            Monitor.PulseAll(gate);
        }
    }

    // Completes when no scanner thread is running a job (at once if none is).
    public Task WhenIdleAsync()
    {
        lock (gate)
        {
            if (busy == 0)
            {
                return Task.CompletedTask;
            }

            var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            idleWaiters.Add(waiter);
            return waiter.Task;
        }
    }

    public bool TryEnqueue(IScanSource source, string? name, TimeSpan timeout, out ScanTicket ticket) =>
        TryEnqueue(source, name, timeout, null, out ticket);

    // inspector: this job's attachment policy, run inside the same libclamav pass (ScanInspector).
    public bool TryEnqueue(IScanSource source, string? name, TimeSpan timeout, ScanInspector? inspector, out ScanTicket ticket)
    {
        ArgumentNullException.ThrowIfNull(source);
        ValidateTimeout(timeout);
        return TryEnqueue(new ScanTicket(source, null, name, timeout, inspector), out ticket);
    }

    // For a message spilled to a file; the caller keeps the handle open until Finished.
    public bool TryEnqueue(SafeFileHandle file, string? name, TimeSpan timeout, out ScanTicket ticket) =>
        TryEnqueue(file, name, timeout, null, out ticket);

    public bool TryEnqueue(SafeFileHandle file, string? name, TimeSpan timeout, ScanInspector? inspector, out ScanTicket ticket)
    {
        ArgumentNullException.ThrowIfNull(file);
        ValidateTimeout(timeout);
        return TryEnqueue(new ScanTicket(null, file, name, timeout, inspector), out ticket);
    }

    // A job of several scans under one deadline and one retained engine (a message, and for strip
    // its parts and the rewritten message). The job gets a token cancelled at the deadline; the
    // ticket's Result is the job's verdict, or the timeout error if the deadline comes first.
    public bool TryEnqueue(Func<ScanEngine, CancellationToken, ScanResult> job, TimeSpan timeout, out ScanTicket ticket)
    {
        ArgumentNullException.ThrowIfNull(job);
        ValidateTimeout(timeout);
        return TryEnqueue(new ScanTicket(job, timeout), out ticket);
    }

    public void Dispose()
    {
        ScanTicket[] abandoned;
        lock (gate)
        {
            if (stopping)
            {
                return;
            }

            stopping = true;
            abandoned = queue.ToArray();
            queue.Clear();
            Monitor.PulseAll(gate);
        }

        foreach (var ticket in abandoned)
        {
            ticket.Cancel("shutting down");
        }

        // Scans in flight finish (libclamav's own scan time limit bounds them).
        foreach (var thread in threads)
        {
            thread.Join();
        }
    }

    private bool TryEnqueue(ScanTicket candidate, out ScanTicket ticket)
    {
        lock (gate)
        {
            // Under a cap, idle threads take queued jobs at once, so they add to the room the
            // queue has. While held they do not, but the bound stays the same.
            var idle = threads.Length - busy;
            if (stopping || (capacity > 0 && queue.Count >= capacity + idle))
            {
                ticket = null!;
                return false;
            }

            candidate.StartClock();
            queue.Enqueue(candidate);
            Monitor.Pulse(gate);
        }

        ticket = candidate;
        return true;
    }

    private static void ValidateTimeout(TimeSpan timeout)
    {
        if (timeout != Timeout.InfiniteTimeSpan && (timeout <= TimeSpan.Zero || timeout.TotalMilliseconds >= uint.MaxValue - 1))
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "must be positive and under 49 days, or infinite");
        }
    }

    private void RunScanner()
    {
        while (true)
        {
            ScanTicket ticket;
            lock (gate)
            {
                while ((queue.Count == 0 || held) && !stopping)
                {
                    Monitor.Wait(gate);
                }

                if (queue.Count == 0)
                {
                    return;
                }

                ticket = queue.Dequeue();
                busy++;
            }

            ticket.LeaveQueue();

            try
            {
                ticket.Run(holder);
            }
            finally
            {
                Interlocked.Exchange(ref lastFinished, Environment.TickCount64);
                Interlocked.Increment(ref finishedCount);
                TaskCompletionSource[]? idle = null;
                lock (gate)
                {
                    busy--;
                    if (busy == 0 && idleWaiters.Count > 0)
                    {
                        idle = [.. idleWaiters];
                        idleWaiters.Clear();
                    }
                }

                if (idle is not null)
                {
                    foreach (var waiter in idle)
                    {
                        waiter.TrySetResult();
                    }
                }
            }
        }
    }
}
