using System.Diagnostics;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

// The one message log line (and the counters) for each transaction that brought content: ids
// are the session id and the message's number in the session (session.N).
internal sealed class TransactionLog(GatewayContext ctx)
{
    private int _messages;

    public MessageLogEntry NewEntry(SmtpSession session, SmtpTransaction tx, long size) => new()
    {
        Session = $"{session.Id}.{++_messages}",
        Client = GatewaySession.ClientAddress(session)?.ToString() ?? "",
        User = session.AuthenticatedUser ?? "",
        Helo = session.HeloName ?? "",
        From = tx.ReversePath.Mailbox,
        Recipients = tx.Recipients.Select(r => r.Path.Mailbox).ToArray(),
        Size = size,
    };

    // Writes the line for a message that reached a verdict and returns the reply the client gets.
    public SmtpReply Finish(MessageLogEntry entry, GatewayTransaction state, MessageVerdict verdict, string virus,
        string action, string downstream, SmtpReply reply)
    {
        var final = entry with
        {
            Verdict = verdict,
            Virus = virus,
            Action = action,
            Downstream = downstream,
            Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
        };
        ctx.Log.Write(final);
        ctx.Metrics.Message(final);
        return reply;
    }

    // Content arrived (in part or whole) but never reached a verdict: one log line for it too.
    public void Aborted(SmtpSession session, SmtpTransaction tx, GatewayTransaction state, long size)
    {
        var refusal = tx.ContentRefusal;
        var entry = NewEntry(session, tx, size) with
        {
            Action = refusal is null ? MessageAction.Aborted : MessageAction.Rejected,
            Downstream = refusal is null ? "" : "refused by gateway: " + refusal,
            Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
        };
        ctx.Log.Write(entry);
        ctx.Metrics.Message(entry);
    }
}
