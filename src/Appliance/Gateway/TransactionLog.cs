using System.Diagnostics;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

// The one message log line (and the counters) for each transaction: ids are the session id and
// the transaction's number in the session (session.N). A transaction that ends without delivery
// gets its line too, with the reason in downstream= (the downstream's reply, or "refused by
// gateway: <reply>" for the gateway's own refusals); GatewayTransaction.TryClaimLog makes it one.
internal sealed class TransactionLog(GatewayContext ctx)
{
    // action= for a transaction the gateway's own code failed on (SmtpSession's observer).
    public const string ErrorAction = "error";

    // action= for a clean message written to the queue ([queue] mode) and answered 250.
    public const string QueuedAction = "queued";

    private int _messages;

    // A transaction keeps the number it got first (GatewayTransaction.Entry), so a failure after
    // its entry was made logs under the same id.
    public MessageLogEntry NewEntry(SmtpSession session, SmtpTransaction? tx, long size)
    {
        var state = tx?.HandlerState as GatewayTransaction;
        var entry = new MessageLogEntry
        {
            Session = state?.Entry?.Session ?? $"{session.Id}.{Interlocked.Increment(ref _messages)}",
            Client = GatewaySession.ClientAddress(session)?.ToString() ?? "",
            User = session.AuthenticatedUser ?? "",
            Helo = session.HeloName ?? "",
            From = tx?.ReversePath.Mailbox ?? "",
            Recipients = tx is null ? [] : Mailboxes(tx),
            Size = size,
        };
        if (state is not null) state.Entry = entry;
        return entry;
    }

    private static string[] Mailboxes(SmtpTransaction tx)
    {
        var mailboxes = new string[tx.Recipients.Count];
        for (int i = 0; i < mailboxes.Length; i++) mailboxes[i] = tx.Recipients[i].Path.Mailbox;
        return mailboxes;
    }

    // Writes the line for a message that reached a verdict and returns the reply the client gets.
    public SmtpReply Finish(MessageLogEntry entry, GatewayTransaction state, MessageVerdict verdict, string virus,
        string action, string downstream, SmtpReply reply)
    {
        if (!state.TryClaimLog()) return reply;
        var final = entry with
        {
            Verdict = verdict,
            Virus = virus,
            Action = action,
            Downstream = downstream,
            Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
        };
        Write(final);
        return reply;
    }

    // MAIL was refused (by the downstream, or because it could not be reached): the transaction
    // ends here. reason: the downstream's reply or what went wrong reaching it.
    public void MailRefused(SmtpSession session, SmtpTransaction tx, GatewayTransaction state, SmtpReply reply, string reason)
    {
        if (!state.TryClaimLog()) return;
        Write(NewEntry(session, tx, 0) with
        {
            Action = ActionFor(reply),
            Downstream = reason,
            Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
        });
    }

    // The transaction ended without a verdict (RSET, QUIT, a broken connection, refused content,
    // a limit): the reason is the last refusal it met, if any.
    public void Aborted(SmtpSession session, SmtpTransaction tx, GatewayTransaction state, long size)
    {
        if (!state.TryClaimLog()) return;
        var gatewayRefusal = tx.ContentRefusal ?? tx.LimitRefusal ?? state.RelayRefusal;
        var (action, reason) =
            gatewayRefusal is not null ? (ActionFor(gatewayRefusal), "refused by gateway: " + gatewayRefusal)
            : state.DownstreamRefusal is { } refused ? (ActionFor(refused), refused.ToString())
            : (MessageAction.Aborted, "");
        Write(NewEntry(session, tx, size) with
        {
            Action = action,
            Downstream = reason,
            Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
        });
    }

    // AUTH failed: no transaction, but the attempt gets its line (the user is in the daemon log).
    // Not a message: it is not counted as one in the metrics.
    public void AuthRefused(SmtpSession session, SmtpReply reply) =>
        ctx.Log.Write(NewEntry(session, null, 0) with { Action = ActionFor(reply), Downstream = "refused by gateway: AUTH " + reply });

    // The gateway's own code failed during the transaction; the client got 451 from the session.
    public void HandlerFailed(SmtpSession session, SmtpTransaction tx, GatewayTransaction state, string stage, Exception error)
    {
        if (!state.TryClaimLog()) return;
        long size = state.Buffer?.Length ?? state.Entry?.Size ?? 0;
        Write(NewEntry(session, tx, size) with
        {
            Action = ErrorAction,
            Downstream = $"gateway error at {stage}: {error.GetType().Name}: {error.Message}",
            Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
        });
    }

    private static string ActionFor(SmtpReply reply) => reply.IsTransient ? MessageAction.Tempfail : MessageAction.Rejected;

    private void Write(MessageLogEntry entry)
    {
        ctx.Log.Write(entry);
        ctx.Metrics.Message(entry);
    }
}
