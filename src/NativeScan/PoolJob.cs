using static Portcullis.NativeScan.Interop.LibClamAV;

namespace Portcullis.NativeScan;

// One job on a ScannerPool: work a scanner thread runs with the retained engine. It is answered
// once, with the work's verdict, or with a timeout error when the deadline passes first (the
// gateway answers then); Finished completes only once no scanner thread will touch the job's
// content again, and only then may the caller free it. The pool's deadline timer times jobs out.
public abstract class PoolJob
{
    private readonly TaskCompletionSource finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int answered;
    private int enqueued;
    // Set when a scanner thread takes the job: a timeout before that was spent waiting for one.
    private volatile bool leftQueue;

    protected PoolJob(TimeSpan timeout)
    {
        Timeout = timeout;
    }

    public TimeSpan Timeout { get; }

    public Task Finished => finished.Task;

    // The pool's bookkeeping, under its lock: the deadline (Environment.TickCount64), the links of
    // its list of jobs waiting for a deadline, and the token source of the scanner thread running
    // the job (taken by the deadline timer to cancel it).
    internal long Deadline;
    internal PoolJob? Earlier;
    internal PoolJob? Later;
    internal bool Timed;
    internal CancellationTokenSource? Running;

    // The work, on a scanner thread with the engine retained for it. deadline is cancelled when
    // the timeout passes; it is valid only while the work runs.
    protected abstract ScanResult Scan(ScanEngine engine, CancellationToken deadline);

    // Called once: with the work's verdict, or with the error of a timeout or a pool shutting down.
    protected abstract void Answer(ScanResult verdict);

    // The scanner has let go of the job (after the work, or without running it).
    protected virtual void LetGo()
    {
    }

    // A job is queued once.
    internal bool TryMarkEnqueued() => Interlocked.Exchange(ref enqueued, 1) == 0;

    internal void Run(EngineHolder holder, CancellationToken deadline)
    {
        // Timed out while queued: the caller has answered already, so skip the work.
        if (Volatile.Read(ref answered) == 0)
        {
            ScanResult verdict;
            try
            {
                var engine = holder.Retain();
                try
                {
                    verdict = Scan(engine, deadline);
                }
                finally
                {
                    engine.Release();
                }
            }
            catch (Exception e)
            {
                verdict = ScanResult.Error((int)cl_error_t.CL_ERROR, e.Message);
            }

            TryAnswer(verdict);
        }

        Complete();
    }

    internal void Cancel(string reason)
    {
        TryAnswer(ScanResult.Error((int)cl_error_t.CL_ERROR, reason));
        Complete();
    }

    internal void LeaveQueue() => leftQueue = true;

    internal void TimeOut() => TryAnswer(ScanResult.Error(ScanResult.TimeoutCode, leftQueue
        ? $"scan timed out after {Timeout.TotalSeconds:0.###}s"
        : $"no scanner became free within the scan timeout of {Timeout.TotalSeconds:0.###}s"));

    private void TryAnswer(ScanResult verdict)
    {
        if (Interlocked.Exchange(ref answered, 1) == 0)
        {
            Answer(verdict);
        }
    }

    private void Complete()
    {
        LetGo();
        finished.TrySetResult();
    }
}
