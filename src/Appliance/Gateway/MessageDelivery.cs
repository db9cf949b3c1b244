// A message the gateway lets through: the trace headers (Received, X-Virus-Scanned, and for a
// detection X-Virus-Status) in front of the content, sent on the session's downstream
// connection; the client hears the downstream's own final reply (mapped like the envelope's),
// so nothing is acknowledged that the downstream has not accepted.
using System.Net;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

// How a message with a detection is delivered: the X-Virus-Status value, the log word, the
// detection, and the Subject field to add when tagging a message that has none.
internal sealed record Delivery(string Status, string Action, string Virus = "", string? AddedSubject = null, string Quarantine = "");

internal sealed class MessageDelivery(GatewayContext ctx, DownstreamLease lease, TransactionLog log, EnvelopeRelay envelope)
{
    public async Task<SmtpReply> DeliverAsync(SmtpSession session, SmtpTransaction tx, MessageLogEntry entry,
        GatewayTransaction state, MessageVerdict verdict, IMessageContent content, Delivery? delivery, CancellationToken ct)
    {
        var (downstream, problem) = await envelope.ReadyForDataAsync(session, tx, ct).ConfigureAwait(false);
        string action = delivery?.Action ?? MessageAction.Delivered;
        entry = entry with { Quarantine = delivery?.Quarantine ?? "" };
        var virus = delivery?.Virus ?? "";
        if (downstream is null)
            return log.Finish(entry, state, verdict, virus, MessageAction.Tempfail, problem, DownstreamReplies.Unavailable);

        byte[] headers = MessageHeaders.Build(ctx.Config.General.Hostname, session.HeloName,
            session.RemoteEndPoint as IPEndPoint, Protocol(session, tx), entry.Session,
            entry.Recipients, DateTimeOffset.Now, ctx.ScannedHeaderValue, delivery?.Status, delivery?.AddedSubject,
            session.AuthenticatedUser);
        SmtpReply reply;
        try
        {
            reply = await downstream.SendMessageAsync(headers, content, ct).ConfigureAwait(false);
            lease.Touch();
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={entry.Session} downstream failed during delivery: {e.Message}");
            ctx.Metrics.DownstreamError();
            await lease.DropAsync().ConfigureAwait(false);
            return log.Finish(entry, state, verdict, virus, MessageAction.Tempfail, e.Message, DownstreamReplies.Unavailable);
        }
        SmtpReply answer = DownstreamReplies.MapFinal(reply);
        if (!reply.IsPositiveCompletion) action = reply.IsTransient ? MessageAction.Tempfail : MessageAction.Rejected;
        if (downstream.IsBroken) await lease.DropAsync().ConfigureAwait(false);
        return log.Finish(entry, state, verdict, virus, action, reply.ToString(), answer);
    }

    // RFC 3848 protocol types for the Received header: ESMTP, then S for TLS and A for AUTH.
    private static string Protocol(SmtpSession session, SmtpTransaction tx)
    {
        string basis = tx.SmtpUtf8 ? "UTF8SMTP" : session.Extended ? "ESMTP" : "SMTP";
        if (basis == "SMTP") return basis;
        return basis + (session.IsSecure ? "S" : "") + (session.AuthenticatedUser is not null ? "A" : "");
    }
}
