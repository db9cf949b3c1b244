using Microsoft.Win32.SafeHandles;

namespace Portcullis.NativeScan;

// One queued scan of a source or a file, or a job of several scans (see ScannerPool.TryEnqueue).
// Result completes with the verdict, or with a timeout error when the deadline passes first.
public sealed class ScanTicket : PoolJob
{
    private readonly TaskCompletionSource<ScanResult> result = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly string? name;
    private readonly ScanInspector? inspector;
    private IScanSource? source;
    private SafeFileHandle? file;
    private Func<ScanEngine, CancellationToken, ScanResult>? job;

    internal ScanTicket(IScanSource? source, SafeFileHandle? file, string? name, TimeSpan timeout, ScanInspector? inspector = null)
        : base(timeout)
    {
        this.inspector = inspector;
        this.source = source;
        this.file = file;
        this.name = name;
    }

    internal ScanTicket(Func<ScanEngine, CancellationToken, ScanResult> job, TimeSpan timeout)
        : base(timeout)
    {
        this.job = job;
    }

    public Task<ScanResult> Result => result.Task;

    protected override ScanResult Scan(ScanEngine engine, CancellationToken deadline) =>
        job is not null ? job(engine, deadline)
            : file is not null ? engine.ScanFile(file, name, inspector) : engine.Scan(source!, name, inspector);

    protected override void Answer(ScanResult verdict) => result.TrySetResult(verdict);

    protected override void LetGo()
    {
        source = null;
        file = null;
        job = null;
    }
}
