using System.Diagnostics;
using Portcullis.Appliance.Messages;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

// What the gateway keeps about one SMTP transaction (SmtpTransaction.HandlerState): when it
// began, the message buffer while it is being received and scanned, whether MAIL went to the
// downstream (so an abort must RSET it), whether a verdict was reached, the last recipient
// refusal (the reason in the log when the transaction ends without delivery), whether it is
// queued rather than relayed in-line, whether it is being forwarded while it arrives, and
// whether its log line was written.
internal sealed class GatewayTransaction
{
    public long Started = Stopwatch.GetTimestamp();
    public MessageBuffer? Buffer;
    public bool MailSent;
    public bool Finished;
    public Logging.MessageLogEntry? Entry;
    public SmtpCore.SmtpReply? RelayRefusal;
    public SmtpCore.SmtpReply? DownstreamRefusal;

    // A large message goes on to the downstream while it arrives (MessageDelivery.ForwardArrivedAsync):
    // the connection it is under way on, how much of the content is on it, and whether it was tried.
    public SmtpCore.Downstream.DownstreamClient? Forwarding;
    public long Forwarded;
    public bool ForwardTried;

    // Non-null: the transaction goes to the queue ([queue] mode), and why.
    public string? QueueReason;

    // MAIL's reply while it is on its way from the downstream (it may yet turn the transaction into a queued one).
    public Task<SmtpCore.SmtpReply>? PendingMail;
    public bool Queued => QueueReason is not null;
    private int _logged;

    // True once: the caller writes the transaction's one message log line.
    public bool TryClaimLog() => Interlocked.Exchange(ref _logged, 1) == 0;

    public static GatewayTransaction Of(SmtpTransaction tx) =>
        tx.HandlerState as GatewayTransaction ?? throw new InvalidOperationException("transaction without gateway state");
}
