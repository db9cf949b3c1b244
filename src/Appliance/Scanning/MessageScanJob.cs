using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Notifications;
using Portcullis.Appliance.Policy;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Scanning;

// Everything that reads a received message to decide its fate, as one job on the scanner: the
// virus scan (with the attachment policy), and for a detection whose action is strip, finding
// the parts to remove, rewriting the message and scanning the result again. It runs where the
// scanner runs it (a pool thread holding the engine) and stops early once the deadline passes;
// the session only waits for the ScanJobResult.
internal sealed class MessageScanJob(MessageBuffer message, ScanJobPolicy policy)
{
    public MessageBuffer Message => message;

    public ScanJobResult Run(IContentScanner scanner, CancellationToken deadline)
    {
        // The attachment policy runs inside libclamav's own pass: a banned name, type or a
        // malformed structure comes back as a Banned.* detection of this scan.
        var scan = scanner.Scan(message, policy.Inspector?.Invoke());
        if (scan.Outcome != ScanOutcome.Infected || deadline.IsCancellationRequested) return ScanJobResult.Of(scan);

        // The facts for notifications and the quarantine from the top header block; the whole
        // MIME tree only when the detection is to be stripped.
        var name = scan.VirusName ?? "unnamed";
        if (policy.ActionFor(name) != DetectionAction.Strip) return new ScanJobResult(scan, MessageSummary.Read(message));
        var structure = MessageStructure.Parse(message);
        var summary = structure is null ? MessageSummary.Read(message) : MessageSummary.Of(structure);
        return Strip(scanner, scan, name, structure, summary, deadline);
    }

    private ScanJobResult Strip(IContentScanner scanner, ScanResult scan, string name, MessageStructure? structure,
        MessageSummary? summary, CancellationToken deadline)
    {
        if (structure is null || policy.AttachmentText is null)
            return ScanJobResult.NotStripped(scan, summary, "the MIME structure cannot be parsed");

        var parts = Detection.Classify(name) == DetectionClass.Banned
            ? []
            : structure.FindInfected(part => deadline.IsCancellationRequested ? ScanResult.Clean : scanner.ScanPart(part), policy.MaxPartSize);
        if (deadline.IsCancellationRequested) return new ScanJobResult(ScanResult.Error(ScanResult.TimeoutCode, "strip ran out of time"), summary);
        parts.AddRange(structure.FindBanned(policy.Banned, policy.MaxPartSize));
        if (parts.Count == 0) return ScanJobResult.NotStripped(scan, summary, "no single part holds the detection");
        if (parts.Any(p => !p.Leaf.Removable)) return ScanJobResult.NotStripped(scan, summary, "the detection is in the message text");

        var facts = policy.Facts with
        {
            Subject = summary?.Subject ?? "",
            MessageId = summary?.MessageId ?? "",
            Action = MessageAction.Stripped,
        };
        var stripped = MessageRewriter.Strip(message, parts, policy.AttachmentText, facts);
        var rescan = scanner.Scan(stripped);
        if (rescan.IsTimeout || deadline.IsCancellationRequested)
            return new ScanJobResult(rescan.IsTimeout ? rescan : ScanResult.Error(ScanResult.TimeoutCode, "strip's rescan ran out of time"), summary);
        if (rescan.Outcome != ScanOutcome.Clean)
            return ScanJobResult.NotStripped(scan, summary, $"not enough after removing {parts.Count} part(s): {rescan}");
        return new ScanJobResult(scan, summary, stripped);
    }
}

// What the job needs to know of the configuration: which detections are stripped, the banned
// attachment rules, the largest part worth decoding, the attachment text and the envelope facts
// its placeholders use (the job fills in the subject and message id), and a new attachment
// inspector for each scan of the received message (null: no policy).
internal sealed record ScanJobPolicy(Func<string, DetectionAction> ActionFor, BannedAttachments Banned, long MaxPartSize,
    MessageTemplate? AttachmentText, Interception Facts, Func<ScanInspector?>? Inspector = null)
{
    public static ScanJobPolicy For(GatewayConfig config, BannedAttachments banned, MessageTemplate? attachmentText, Interception facts)
    {
        // Only the facts differ from one message to the next: the rest is made once per configuration.
        var shared = Volatile.Read(ref last);
        if (shared is null || !ReferenceEquals(shared.Config, config) || !ReferenceEquals(shared.Policy.Banned, banned)
            || !ReferenceEquals(shared.Policy.AttachmentText, attachmentText))
        {
            var policy = Create(config, banned, attachmentText, facts);
            Volatile.Write(ref last, new Shared(config, policy));
            return policy;
        }
        return shared.Policy with { Facts = facts };
    }

    // Apart from For, whose every call would otherwise allocate the lambdas' captures.
    private static ScanJobPolicy Create(GatewayConfig config, BannedAttachments banned, MessageTemplate? attachmentText, Interception facts) =>
        new(name => config.Scan.ActionFor(Detection.Classify(name)), banned, config.Scan.MaxFileSize,
            attachmentText, facts, () => AttachmentInspector.For(banned, config.Scan));

    private sealed record Shared(GatewayConfig Config, ScanJobPolicy Policy);
    private static Shared? last;
}

// A job's answer: the verdict (clean, a detection and its name, or an error/timeout), the
// message's summary for a detection, and for a strip detection the rewritten message or why
// there is none (the detection then falls back to reject).
internal sealed record ScanJobResult(ScanResult Scan, MessageSummary? Summary = null, IMessageContent? Stripped = null, string? NotStrippedBecause = null)
{
    public ScanOutcome Outcome => Scan.Outcome;

    public string Detection => Scan.VirusName ?? "unnamed";

    // Most messages are clean: they share one answer.
    private static readonly ScanJobResult CleanResult = new(ScanResult.Clean);

    public static ScanJobResult Of(ScanResult scan) => scan == ScanResult.Clean ? CleanResult : new(scan);

    public static ScanJobResult Failed(ScanResult error) => new(error);

    public static ScanJobResult NotStripped(ScanResult scan, MessageSummary? summary, string because) => new(scan, summary, null, because);
}
