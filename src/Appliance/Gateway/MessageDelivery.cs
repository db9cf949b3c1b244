// A message the gateway lets through: the trace headers (Received, X-Virus-Scanned, and for a
// detection X-Virus-Status) in front of the content, sent on the session's downstream
// connection; the client hears the downstream's own final reply (mapped like the envelope's),
// so nothing is acknowledged that the downstream has not accepted. A queued transaction
// ([queue] mode) goes to the queue instead, answered once it is durably on disk.
using System.Net;
using System.Runtime.CompilerServices;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Queue;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

// How a message with a detection is delivered: the X-Virus-Status value, the log word, the
// detection, and the Subject field to add when tagging a message that has none.
internal sealed record Delivery(string Status, string Action, string Virus = "", string? AddedSubject = null, string Quarantine = "");

internal sealed class MessageDelivery(GatewayContext ctx, DownstreamLease lease, TransactionLog log, EnvelopeRelay envelope)
{
    // Pooled builder (also on MessagePipeline.OnMessageAsync): once per message, awaited once.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<SmtpReply> DeliverAsync(SmtpSession session, SmtpTransaction tx, MessageLogEntry entry,
        GatewayTransaction state, MessageVerdict verdict, IMessageContent content, Delivery? delivery, CancellationToken ct)
    {
        var quarantine = delivery?.Quarantine ?? "";
        if (entry.Quarantine != quarantine) entry = entry with { Quarantine = quarantine };
        if (state.QueueReason is { } why) return Queue(session, tx, entry, state, verdict, content, delivery, why);

        // Forwarded while it arrived: a message delivered as it came only needs its end.
        var forwarded = await TakeForwardedAsync(state, delivery).ConfigureAwait(false);
        var (downstream, problem, unreachable) = forwarded is not null ? (forwarded, "", false)
            : await envelope.ReadyForDataAsync(session, tx, ct).ConfigureAwait(false);
        string action = delivery?.Action ?? MessageAction.Delivered;
        var virus = delivery?.Virus ?? "";
        if (downstream is null)
        {
            // The server accepted the envelope, then went away: in fallback mode the queue takes it.
            if (unreachable && envelope.FallsBackToQueue(session))
                return Queue(session, tx, entry, state, verdict, content, delivery, "downstream lost before the message: " + problem);
            return log.Finish(entry, state, verdict, virus, MessageAction.Tempfail, problem, DownstreamReplies.Unavailable);
        }

        SmtpReply reply;
        try
        {
            reply = forwarded is not null
                ? await forwarded.EndStreamAsync(content, ct).ConfigureAwait(false)
                : await downstream.SendMessageAsync(Headers(session, tx, entry, delivery), content, ct).ConfigureAwait(false);
            lease.Touch();
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={entry.Session} downstream failed during delivery: {e.Message}");
            ctx.Metrics.DownstreamError();
            await lease.DropAsync().ConfigureAwait(false);
            // No final reply came: the server has not taken it (at worst a duplicate, RFC 5321 §6.1).
            if (envelope.FallsBackToQueue(session))
                return Queue(session, tx, entry, state, verdict, content, delivery, "downstream lost during the message: " + e.Message);
            return log.Finish(entry, state, verdict, virus, MessageAction.Tempfail, e.Message, DownstreamReplies.Unavailable);
        }
        SmtpReply answer = DownstreamReplies.MapFinal(reply);
        if (!reply.IsPositiveCompletion) action = reply.IsTransient ? MessageAction.Tempfail : MessageAction.Rejected;
        if (downstream.IsBroken) await lease.DropAsync().ConfigureAwait(false);
        return log.Finish(entry, state, verdict, virus, action, reply.ToString(), answer);
    }

    // Past [limits] stream_threshold a message goes on to the downstream while it arrives, so the
    // server reads it meanwhile and only the end of data waits for the verdict (a 5 MB message no
    // longer crosses the loopback twice in a row). Smaller mail is sent whole once scanned, and its
    // connection stays parked for other sessions meanwhile (DownstreamPool.Park).
    private const long ForwardPiece = 64 * 1024;   // what arrived is sent on in pieces this large

    // Called between the client's reads while the message comes in. Only on the connection that
    // holds the envelope: one lent to another session meanwhile, or dead, is replaced once the
    // message is in (EnvelopeRelay.ReadyForDataAsync), not while the client waits.
    public ValueTask ForwardArrivedAsync(SmtpSession session, SmtpTransaction tx, GatewayTransaction state,
        Messages.MessageBuffer buffer, CancellationToken ct)
    {
        if (state.Forwarding is { } forwarding)
            return buffer.Length - state.Forwarded >= ForwardPiece ? ContinueForwardingAsync(session, state, forwarding, buffer, ct) : ValueTask.CompletedTask;
        long threshold = ctx.Config.Limits.StreamThreshold;
        if (state.ForwardTried || threshold == 0 || buffer.Length < threshold || !state.MailSent || state.Queued) return ValueTask.CompletedTask;
        state.ForwardTried = true;
        return BeginForwardingAsync(session, tx, state, buffer, ct);
    }

    private async ValueTask BeginForwardingAsync(SmtpSession session, SmtpTransaction tx, GatewayTransaction state,
        Messages.MessageBuffer buffer, CancellationToken ct)
    {
        if (lease.Usable is not { } downstream) return;
        if (lease.Idle >= ctx.DownstreamTimings.ProbeAfter && !await lease.ProbeAsync().ConfigureAwait(false)) return;
        // Clean mail goes out with no X-Virus-Status, so the headers are known before the verdict.
        var headers = Headers(session, tx, log.NewEntry(session, tx, buffer.Length), null);
        try
        {
            // Refused DATA: nothing begun; the end of the message asks again and reports the reply.
            if (await downstream.BeginStreamAsync(headers, ct).ConfigureAwait(false) is not null) return;
            state.Forwarding = downstream;
            await downstream.ContinueStreamAsync(buffer, ct).ConfigureAwait(false);
            state.Forwarded = buffer.Length;
        }
        catch (DownstreamException e)
        {
            await StopForwardingAsync(session, state, e).ConfigureAwait(false);
        }
    }

    private async ValueTask ContinueForwardingAsync(SmtpSession session, GatewayTransaction state, DownstreamClient forwarding,
        Messages.MessageBuffer buffer, CancellationToken ct)
    {
        try
        {
            await forwarding.ContinueStreamAsync(buffer, ct).ConfigureAwait(false);
            state.Forwarded = buffer.Length;
        }
        catch (DownstreamException e)
        {
            await StopForwardingAsync(session, state, e).ConfigureAwait(false);
        }
    }

    // The connection broke under the forwarded message: it goes whole once scanned, on another.
    private async ValueTask StopForwardingAsync(SmtpSession session, GatewayTransaction state, DownstreamException e)
    {
        Log.Info($"session={session.Id} forwarding the message while it arrives failed: {e.Message}; it is sent whole once scanned");
        ctx.Metrics.DownstreamError();
        state.Forwarding = null;
        await lease.DropAsync().ConfigureAwait(false);
    }

    // The connection the message was forwarded on while it arrived, when it can be delivered as it
    // came (clean, unchanged: no X-Virus-Status, no rewrite); otherwise that data is abandoned
    // (never ended, so the server discards it) and the message goes whole on another connection.
    private async ValueTask<DownstreamClient?> TakeForwardedAsync(GatewayTransaction state, Delivery? delivery)
    {
        if (state.Forwarding is not { } forwarding) return null;
        state.Forwarding = null;
        if (delivery is null && forwarding.IsStreaming) return forwarding;
        await lease.AbandonForwardedAsync(forwarding, delivery?.Action ?? "the connection broke").ConfigureAwait(false);
        return null;
    }

    // Store and forward: the message with its trace headers goes to the queue, and the client
    // hears 250 only once it is on disk; a full queue or disk is 452 4.3.1 (RFC 3463).
    private SmtpReply Queue(SmtpSession session, SmtpTransaction tx, MessageLogEntry entry, GatewayTransaction state,
        MessageVerdict verdict, IMessageContent content, Delivery? delivery, string why)
    {
        string action = delivery?.Action is { } detection && detection != MessageAction.Delivered ? detection : TransactionLog.QueuedAction;
        var virus = delivery?.Virus ?? "";
        if (ctx.Queue is not { } queue)
            return log.Finish(entry, state, verdict, virus, MessageAction.Tempfail, "no queue: " + why, DownstreamReplies.Unavailable);
        QueueEntry queued;
        try
        {
            queued = queue.Store.Add(QueueEnvelope(session, tx, entry), Headers(session, tx, entry, delivery), content, DateTimeOffset.UtcNow);
        }
        catch (Exception e) when (e is QueueFullException or IOException or UnauthorizedAccessException)
        {
            Log.Warn($"session={entry.Session} queue: cannot take the message: {e.Message}");
            return log.Finish(entry, state, verdict, virus, MessageAction.Tempfail, "queue full: " + e.Message,
                new SmtpReply(452, "4.3.1", "Insufficient system storage, try again later"));
        }
        Log.Info($"queue: {queued.Id} queued session={entry.Session} from=<{queued.Sender}> rcpts={queued.Recipients.Count} size={queued.Size} ({why})");
        queue.Enqueue(queued);
        return log.Finish(entry, state, verdict, virus, action, $"queued as {queued.Id} ({why})",
            new SmtpReply(250, "2.0.0", $"Ok: queued as {queued.Id}"));
    }

    private byte[] Headers(SmtpSession session, SmtpTransaction tx, MessageLogEntry entry, Delivery? delivery) =>
        MessageHeaders.Build(ctx.Config.General.Hostname, session.HeloName,
            session.RemoteEndPoint as IPEndPoint, Protocol(session, tx), entry.Session,
            entry.Recipients, DateTimeOffset.Now, ctx.ScannedHeaderValue, delivery?.Status, delivery?.AddedSubject,
            session.AuthenticatedUser);

    // What the queue keeps of the transaction: the envelope with its DSN parameters and the client.
    private static QueueEntry QueueEnvelope(SmtpSession session, SmtpTransaction tx, MessageLogEntry entry) => new()
    {
        Sender = tx.ReversePath.Mailbox,
        Recipients = tx.Recipients.Select(r => new QueuedRecipient
        {
            Address = r.Path.Mailbox,
            Notify = Parameter(r.Parameters, "NOTIFY"),
            OriginalRecipient = Parameter(r.Parameters, "ORCPT"),
        }).ToArray(),
        Ret = tx.DsnRet,
        EnvId = tx.DsnEnvId,
        EightBitMime = tx.Body != BodyType.SevenBit,
        SmtpUtf8 = tx.SmtpUtf8,
        ClientAddress = GatewaySession.ClientAddress(session)?.ToString() ?? "",
        ClientPort = (session.RemoteEndPoint as IPEndPoint)?.Port,
        Helo = session.HeloName ?? "",
        Extended = session.Extended,
        AuthUser = session.AuthenticatedUser,
        Session = entry.Session,
    };

    private static string? Parameter(IReadOnlyList<KeyValuePair<string, string?>> parameters, string key) =>
        parameters.FirstOrDefault(p => string.Equals(p.Key, key, StringComparison.OrdinalIgnoreCase)).Value;

    // RFC 3848 protocol types for the Received header: ESMTP, then S for TLS and A for AUTH.
    private static string Protocol(SmtpSession session, SmtpTransaction tx)
    {
        string basis = tx.SmtpUtf8 ? "UTF8SMTP" : session.Extended ? "ESMTP" : "SMTP";
        if (basis == "SMTP") return basis;
        return basis + (session.IsSecure ? "S" : "") + (session.AuthenticatedUser is not null ? "A" : "");
    }
}
