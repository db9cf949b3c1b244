using Portcullis.Appliance.Messages;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Scanning;

// libclamav through the bounded scanner pool, with the engine that EngineHolder swaps on reload.
internal sealed class PooledScanner(EngineHolder engines, ScannerPool pool, string productVersion) : IMessageScanner
{
    public EngineHolder Engines => engines;
    public ScannerPool Pool => pool;

    public string Description => engines.TryGetCurrent(out var engine)
        ? $"portcullis {productVersion}, ClamAV {ClamAV.Version}/{engine.SignatureCount}"
        : $"portcullis {productVersion}, ClamAV {ClamAV.Version}/no signatures";

    public bool TryScan(MessageBuffer message, TimeSpan timeout, out ScanJob job)
    {
        // A spilled message is scanned by descriptor; one in memory through the fmap callback.
        bool queued = message is { IsSpilled: true, SpillHandle: { } file }
            ? pool.TryEnqueue(file, null, timeout, out var ticket)
            : pool.TryEnqueue(message, null, timeout, out ticket);
        job = queued ? new ScanJob(ticket.Result, ticket.Finished) : default;
        return queued;
    }

    public bool TryScan(SplicedContent message, TimeSpan timeout, out ScanJob job)
    {
        bool queued = pool.TryEnqueue(message, null, timeout, out var ticket);
        job = queued ? new ScanJob(ticket.Result, ticket.Finished) : default;
        return queued;
    }

    public ScanResult ScanPart(ReadOnlyMemory<byte> part)
    {
        // A reload may retire the engine between reading Current and scanning: take the new one.
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return engines.Current.Scan(part.Span);
            }
            catch (ObjectDisposedException) when (attempt < 3)
            {
            }
        }
    }
}
