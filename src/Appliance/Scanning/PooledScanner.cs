using Portcullis.Appliance.Messages;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Scanning;

// libclamav through the bounded scanner pool, with the engine that EngineHolder swaps on reload.
// A whole scan job is one pool job: one thread, one deadline, one retained engine.
internal sealed class PooledScanner(EngineHolder engines, ScannerPool pool, string productVersion,
    Func<ScanEngine, IContentScanner>? contentScanner = null) : IMessageScanner
{
    private readonly Func<ScanEngine, IContentScanner> _contentScanner = contentScanner ?? (static engine => new EngineScanner(engine));

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
        ScanJobResult? produced = null;
        if (!pool.TryEnqueue((engine, deadline) =>
            {
                var result = job.Run(_contentScanner(engine), deadline);
                Volatile.Write(ref produced, result);
                return result.Scan;
            }, timeout, out var ticket))
        {
            running = default;
            return false;
        }

        // The ticket's verdict is the job's, unless the deadline answered first.
        var verdict = ticket.Result.ContinueWith(
            t => Volatile.Read(ref produced) is { } r && !t.Result.IsTimeout ? r : ScanJobResult.Failed(t.Result),
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        running = new ScanJob(verdict, ticket.Finished);
        return true;
    }

    // The engine the pool retained for this job.
    private sealed class EngineScanner(ScanEngine engine) : IContentScanner
    {
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
