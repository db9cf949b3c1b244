using Portcullis.Appliance.Messages;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Scanning;

// What the message pipeline asks of the virus scanner. The product's is PooledScanner (libclamav
// on the scanner pool); tests script verdicts with their own.
internal interface IMessageScanner
{
    // The X-Virus-Scanned value: product, engine and signature count.
    string Description { get; }

    // Queues a scan of a received message; false when every scanner is busy (the queue is full).
    bool TryScan(MessageBuffer message, TimeSpan timeout, out ScanJob job);

    // The same for a rewritten message (a stripped one is scanned again before it leaves).
    bool TryScan(SplicedContent message, TimeSpan timeout, out ScanJob job);

    // One MIME part, scanned on the calling thread (strip looks for the infected parts).
    ScanResult ScanPart(ReadOnlyMemory<byte> part);
}

// A queued scan: its verdict, and when the scanner has let go of the content (a scan that timed
// out may still be reading it).
internal readonly record struct ScanJob(Task<ScanResult> Verdict, Task Finished);
