using Portcullis.Appliance.Messages;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Scanning;

// What the message pipeline asks of the virus scanner: run one message's scan job where scans
// are allowed to run (PooledScanner: a scanner pool thread, under its thread limit, the job's
// deadline and a retained engine). Tests run the same job with scripted verdicts.
internal interface IMessageScanner
{
    // The X-Virus-Scanned value: product, engine and signature count.
    string Description { get; }

    // Starts the job; false when every scanner is busy (the queue is full).
    bool TryStart(MessageScanJob job, TimeSpan timeout, out ScanJob running);
}

// The scans a job makes, all with the engine the job holds: the received message, a decoded
// MIME part (strip looks for the infected ones), the rewritten message (strip's rescan).
internal interface IContentScanner
{
    // inspector: the attachment policy run by libclamav's callbacks inside this same pass.
    ScanResult Scan(IMessageContent content, ScanInspector? inspector = null);

    ScanResult ScanPart(ReadOnlyMemory<byte> part);
}

// A started job: its verdict (a timeout error when the deadline passes first), and when the
// scanner has let go of the content (a job that timed out may still be reading it).
internal readonly record struct ScanJob(Task<ScanJobResult> Verdict, Task Finished);
