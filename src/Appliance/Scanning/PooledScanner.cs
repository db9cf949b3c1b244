using Portcullis.Appliance.Messages;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Scanning;

// libclamav through the bounded scanner pool, with the engine that EngineHolder swaps on reload.
// A whole scan job is one pool job: one thread, one deadline, one retained engine.
internal sealed class PooledScanner(EngineHolder engines, ScannerPool pool, string productVersion,
    Func<ScanEngine, IContentScanner>? contentScanner = null) : IMessageScanner
{
    // The scanner of the engine the last job was given: the same for every job until a reload.
    private EngineScanner? _engineScanner;

    public EngineHolder Engines => engines;
    public ScannerPool Pool => pool;

    // Goes into every delivered message's header: made again only when the signature count changes.
    public string Description
    {
        get
        {
            if (!engines.TryGetCurrent(out var engine)) return $"portcullis {productVersion}, ClamAV {ClamAV.Version}/no signatures";
            var described = Volatile.Read(ref _described);
            if (described?.Signatures != engine.SignatureCount)
                Volatile.Write(ref _described, described = new(engine.SignatureCount, $"portcullis {productVersion}, ClamAV {ClamAV.Version}/{engine.SignatureCount}"));
            return described.Text;
        }
    }

    private sealed record Described(uint Signatures, string Text);
    private Described? _described;

    public bool TryStart(MessageScanJob job, TimeSpan timeout, out ScanJob running)
    {
        var ticket = new MessageTicket(this, job, timeout);
        if (!pool.TryEnqueue(ticket))
        {
            running = default;
            return false;
        }

        running = new ScanJob(ticket.Verdict, ticket.Finished);
        return true;
    }

    private IContentScanner ScannerFor(ScanEngine engine)
    {
        if (contentScanner is not null) return contentScanner(engine);
        var scanner = Volatile.Read(ref _engineScanner);
        if (scanner?.Engine != engine) Volatile.Write(ref _engineScanner, scanner = new EngineScanner(engine));
        return scanner;
    }

    // The job as the pool runs it. Its verdict is the job's, unless the deadline answered first.
    private sealed class MessageTicket(PooledScanner scanner, MessageScanJob job, TimeSpan timeout) : PoolJob(timeout)
    {
        private readonly TaskCompletionSource<ScanJobResult> _verdict = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private ScanJobResult? _produced;

        public Task<ScanJobResult> Verdict => _verdict.Task;

        protected override ScanResult Scan(ScanEngine engine, CancellationToken deadline)
        {
            var result = job.Run(scanner.ScannerFor(engine), deadline);
            Volatile.Write(ref _produced, result);
            return result.Scan;
        }

        protected override void Answer(ScanResult verdict) =>
            _verdict.TrySetResult(Volatile.Read(ref _produced) is { } r && !verdict.IsTimeout ? r : ScanJobResult.Failed(verdict));
    }

    // The engine the pool retained for this job.
    private sealed class EngineScanner(ScanEngine engine) : IContentScanner
    {
        public ScanEngine Engine => engine;

        // A spilled message is scanned by descriptor; one in memory through the fmap callback.
        public ScanResult Scan(IMessageContent content, ScanInspector? inspector = null) => content switch
        {
            MessageBuffer { IsSpilled: true, SpillHandle: { } file } => engine.ScanFile(file, null, inspector),
            IScanSource source => engine.Scan(source, null, inspector),
            _ => ScanResult.Error(-1, $"cannot scan a {content.GetType().Name}"),
        };

        public ScanResult ScanPart(ReadOnlyMemory<byte> part) => engine.Scan(part.Span);
    }
}
