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
// jobs wait, their timeouts still running. One timer, set for the nearest deadline, times out
// the jobs queued or running; each scanner thread reuses its token source for the jobs it runs
// until a timeout cancels one.
public sealed class ScannerPool : IDisposable
{
    private readonly EngineHolder holder;
    // 0: no cap (see above).
    private readonly int capacity;
    private readonly Queue<PoolJob> queue = new();
    // A plain monitor, not System.Threading.Lock: scanner threads Monitor.Wait on it.
    private readonly object gate = new();
    private readonly Thread[] threads;
    private readonly List<TaskCompletionSource> idleWaiters = [];
    private readonly Timer deadlines;
    // The jobs with a deadline not yet passed, newest first, and when the timer is due (MaxValue: not set).
    private PoolJob? timed;
    private long timerDue = long.MaxValue;
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
        deadlines = new Timer(static pool => ((ScannerPool)pool!).TimeOutJobs(), this, Timeout.Infinite, Timeout.Infinite);
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
        var candidate = new ScanTicket(source, null, name, timeout, inspector);
        return TryEnqueue(candidate, out ticket);
    }

    // For a message spilled to a file; the caller keeps the handle open until Finished.
    public bool TryEnqueue(SafeFileHandle file, string? name, TimeSpan timeout, out ScanTicket ticket) =>
        TryEnqueue(file, name, timeout, null, out ticket);

    public bool TryEnqueue(SafeFileHandle file, string? name, TimeSpan timeout, ScanInspector? inspector, out ScanTicket ticket)
    {
        ArgumentNullException.ThrowIfNull(file);
        ValidateTimeout(timeout);
        var candidate = new ScanTicket(null, file, name, timeout, inspector);
        return TryEnqueue(candidate, out ticket);
    }

    // A job of several scans under one deadline and one retained engine (a message, and for strip
    // its parts and the rewritten message). The job gets a token cancelled at the deadline; the
    // ticket's Result is the job's verdict, or the timeout error if the deadline comes first.
    public bool TryEnqueue(Func<ScanEngine, CancellationToken, ScanResult> job, TimeSpan timeout, out ScanTicket ticket)
    {
        ArgumentNullException.ThrowIfNull(job);
        ValidateTimeout(timeout);
        var candidate = new ScanTicket(job, timeout);
        return TryEnqueue(candidate, out ticket);
    }

    // Any other job (the gateway's message scan job); false when the queue is full or the pool stopping.
    public bool TryEnqueue(PoolJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        ValidateTimeout(job.Timeout);
        lock (gate)
        {
            // Under a cap, idle threads take queued jobs at once, so they add to the room the
            // queue has. While held they do not, but the bound stays the same.
            var idle = threads.Length - busy;
            if (stopping || (capacity > 0 && queue.Count >= capacity + idle))
            {
                return false;
            }

            if (!job.TryMarkEnqueued())
            {
                throw new InvalidOperationException("the job was queued already");
            }

            if (job.Timeout != Timeout.InfiniteTimeSpan)
            {
                var now = Environment.TickCount64;
                job.Deadline = now + (long)job.Timeout.TotalMilliseconds;
                AddTimed(job);
                if (job.Deadline < timerDue)
                {
                    SetTimer(job.Deadline, now);
                }
            }

            queue.Enqueue(job);
            Monitor.Pulse(gate);
        }

        return true;
    }

    public void Dispose()
    {
        PoolJob[] abandoned;
        lock (gate)
        {
            if (stopping)
            {
                return;
            }

            stopping = true;
            abandoned = queue.ToArray();
            queue.Clear();
            foreach (var job in abandoned)
            {
                RemoveTimed(job);
            }

            Monitor.PulseAll(gate);
        }

        foreach (var job in abandoned)
        {
            job.Cancel("shutting down");
        }

        // Scans in flight finish (libclamav's own scan time limit bounds them), their deadlines still kept.
        foreach (var thread in threads)
        {
            thread.Join();
        }

        lock (gate)
        {
            deadlines.Dispose();
            timerDue = long.MinValue;
        }
    }

    private bool TryEnqueue(ScanTicket candidate, out ScanTicket ticket)
    {
        ticket = TryEnqueue((PoolJob)candidate) ? candidate : null!;
        return ticket is not null;
    }

    private static void ValidateTimeout(TimeSpan timeout)
    {
        if (timeout != Timeout.InfiniteTimeSpan && (timeout <= TimeSpan.Zero || timeout.TotalMilliseconds >= uint.MaxValue - 1))
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "must be positive and under 49 days, or infinite");
        }
    }

    // Links a job into the list the timer checks (newest first).
    private void AddTimed(PoolJob job)
    {
        job.Timed = true;
        job.Earlier = null;
        job.Later = timed;
        if (timed is not null)
        {
            timed.Earlier = job;
        }

        timed = job;
    }

    private void RemoveTimed(PoolJob job)
    {
        if (!job.Timed)
        {
            return;
        }

        if (job.Earlier is null)
        {
            timed = job.Later;
        }
        else
        {
            job.Earlier.Later = job.Later;
        }

        if (job.Later is not null)
        {
            job.Later.Earlier = job.Earlier;
        }

        job.Timed = false;
        job.Earlier = null;
        job.Later = null;
    }

    // Under the lock; after Dispose (timerDue MinValue) the timer is gone.
    private void SetTimer(long due, long now)
    {
        if (timerDue == long.MinValue)
        {
            return;
        }

        timerDue = due;
        deadlines.Change(Math.Max(due - now, 1), Timeout.Infinite);
    }

    // The timer: answers every job whose deadline has passed and cancels the token of those running.
    private void TimeOutJobs()
    {
        List<(PoolJob Job, CancellationTokenSource? Running)>? expired = null;
        lock (gate)
        {
            if (timerDue == long.MinValue)
            {
                return;
            }

            var now = Environment.TickCount64;
            var next = long.MaxValue;
            for (var job = timed; job is not null;)
            {
                var later = job.Later;
                if (job.Deadline <= now)
                {
                    RemoveTimed(job);
                    (expired ??= []).Add((job, job.Running));
                    // Taken: the thread running it gets a new token source for its next job.
                    job.Running = null;
                }
                else
                {
                    next = Math.Min(next, job.Deadline);
                }

                job = later;
            }

            timerDue = long.MaxValue;
            if (next != long.MaxValue)
            {
                SetTimer(next, now);
            }
        }

        if (expired is not null)
        {
            foreach (var (job, running) in expired)
            {
                job.TimeOut();
                running?.Cancel();
            }
        }
    }

    private void RunScanner()
    {
        var cancel = new CancellationTokenSource();
        while (true)
        {
            PoolJob ticket;
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
                ticket.Running = cancel;
                busy++;
            }

            ticket.LeaveQueue();

            try
            {
                ticket.Run(holder, cancel.Token);
            }
            finally
            {
                Interlocked.Exchange(ref lastFinished, Environment.TickCount64);
                Interlocked.Increment(ref finishedCount);
                TaskCompletionSource[]? idle = null;
                lock (gate)
                {
                    RemoveTimed(ticket);
                    // The timer took the token source to cancel it: the next job gets a new one.
                    // Otherwise a reset drops whatever the job left registered on the token.
                    if (ticket.Running is null || !cancel.TryReset())
                    {
                        cancel = new CancellationTokenSource();
                    }

                    ticket.Running = null;
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
