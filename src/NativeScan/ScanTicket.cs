using Microsoft.Win32.SafeHandles;
using static Portcullis.NativeScan.Interop.LibClamAV;

namespace Portcullis.NativeScan;

// One queued scan. Result completes with the verdict, or with a timeout error when the deadline
// passes first (the gateway answers then); Finished completes only once no scanner thread will
// touch the source again, and only then may the caller free the message buffer.
public sealed class ScanTicket
{
    private readonly TaskCompletionSource<ScanResult> result = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TimeSpan timeout;
    private readonly string? name;
    private readonly ScanInspector? inspector;
    private IScanSource? source;
    private SafeFileHandle? file;
    private Timer? deadline;
    private Func<ScanEngine, CancellationToken, ScanResult>? job;
    private CancellationTokenSource? expired;
    // Set when a scanner thread takes the job: a timeout before that was spent waiting for one.
    private volatile bool leftQueue;

    internal ScanTicket(IScanSource? source, SafeFileHandle? file, string? name, TimeSpan timeout, ScanInspector? inspector = null)
    {
        this.inspector = inspector;
        this.source = source;
        this.file = file;
        this.name = name;
        this.timeout = timeout;
    }

    internal ScanTicket(Func<ScanEngine, CancellationToken, ScanResult> job, TimeSpan timeout)
    {
        this.job = job;
        this.timeout = timeout;
        expired = new CancellationTokenSource();
    }

    public Task<ScanResult> Result => result.Task;

    public Task Finished => finished.Task;

    internal void StartClock()
    {
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            deadline = new Timer(static state => ((ScanTicket)state!).TimeOut(), this, timeout, Timeout.InfiniteTimeSpan);
        }
    }

    internal void Run(EngineHolder holder)
    {
        // Timed out while queued: the caller has answered already, so skip the work.
        if (!result.Task.IsCompleted)
        {
            ScanResult verdict;
            try
            {
                var engine = holder.Retain();
                try
                {
                    verdict = job is not null ? job(engine, expired!.Token)
                        : file is not null ? engine.ScanFile(file, name, inspector) : engine.Scan(source!, name, inspector);
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

            result.TrySetResult(verdict);
        }

        Complete();
    }

    internal void Cancel(string reason)
    {
        result.TrySetResult(ScanResult.Error((int)cl_error_t.CL_ERROR, reason));
        Complete();
    }

    private void Complete()
    {
        deadline?.Dispose();
        source = null;
        file = null;
        job = null;
        finished.TrySetResult();
    }

    internal void LeaveQueue() => leftQueue = true;

    private void TimeOut()
    {
        result.TrySetResult(ScanResult.Error(ScanResult.TimeoutCode, leftQueue
            ? $"scan timed out after {timeout.TotalSeconds:0.###}s"
            : $"no scanner became free within the scan timeout of {timeout.TotalSeconds:0.###}s"));
        expired?.Cancel();
    }
}
