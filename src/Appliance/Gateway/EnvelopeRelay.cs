// The envelope towards the downstream: MAIL with the client's parameters mapped to what the
// downstream offers (RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN), RCPT
// with its DSN parameters, XFORWARD ahead of MAIL, and the downstream's replies mapped back to
// the client. Commands are pipelined when the downstream offers PIPELINING; the client's own
// pipelining group decides when they are flushed.
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal sealed class EnvelopeRelay(GatewayContext ctx, DownstreamLease lease)
{
    public async ValueTask<SmtpResponse> MailAsync(SmtpSession session, SmtpTransaction tx, GatewayTransaction state, CancellationToken ct)
    {
        DownstreamClient downstream;
        ClientIdentity.Presented identity;
        try
        {
            downstream = await lease.AcquireAsync(ct).ConfigureAwait(false);
            identity = await ClientIdentity.PresentAsync(ctx, session, downstream, async () =>
            {
                await lease.DropAsync().ConfigureAwait(false);
                return await lease.AcquireAsync(ct).ConfigureAwait(false);
            }, ct).ConfigureAwait(false);
            downstream = identity.Downstream;
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={session.Id} downstream unavailable: {e.Message}");
            ctx.Metrics.DownstreamError();
            return DownstreamReplies.Unavailable;
        }
        if (identity.Refusal is { } refused) return refused;

        var caps = downstream.Capabilities;
        var parameters = new List<string>();
        if (tx.DeclaredSize is long size && caps.MaxSize is not null)
            parameters.Add($"SIZE={size + 1024}"); // room for the trace headers we add
        if (tx.Body == BodyType.EightBitMime)
        {
            if (!caps.EightBitMime) return new SmtpReply(555, "5.6.3", "8BITMIME is not accepted by the mail server behind this gateway");
            parameters.Add("BODY=8BITMIME");
        }
        if (tx.SmtpUtf8)
        {
            if (!caps.SmtpUtf8) return new SmtpReply(555, "5.6.7", "SMTPUTF8 is not accepted by the mail server behind this gateway");
            parameters.Add("SMTPUTF8");
        }
        if (tx.DsnRet is not null || tx.DsnEnvId is not null)
        {
            if (!caps.Dsn) return new SmtpReply(555, "5.5.4", "DSN is not accepted by the mail server behind this gateway");
            if (tx.DsnRet is not null) parameters.Add("RET=" + tx.DsnRet);
            if (tx.DsnEnvId is not null) parameters.Add("ENVID=" + tx.DsnEnvId);
        }

        state.MailSent = true;
        if (!identity.ByXClient) SendXForward(session, downstream, ct);
        Task<SmtpReply> reply = Send(() => downstream.MailAsync(tx.ReversePath.ToString(), Join(parameters), ct));
        return new SmtpResponse(MapAsync(session, reply));
    }

    // A recipient the relay policy let through: its RCPT goes downstream, the downstream's reply back.
    public SmtpResponse Rcpt(SmtpSession session, SmtpRecipient recipient, CancellationToken ct)
    {
        if (lease.Usable is not { } downstream) return DownstreamReplies.Unavailable;

        // NOTIFY and ORCPT only reach here when DSN was offered, i.e. the downstream has it.
        var parameters = recipient.Parameters.Select(p => p.Value is null ? p.Key : p.Key + "=" + p.Value);
        Task<SmtpReply> reply = Send(() => downstream.RcptAsync(recipient.Path.ToString(), Join(parameters), ct));
        return new SmtpResponse(MapAsync(session, reply));
    }

    // Postfix's XFORWARD (XFORWARD_README): the downstream logs and decides on the real client.
    // Sent before every MAIL (Postfix forgets the attributes at the end of a transaction), pipelined
    // with it; a refusal only costs the attributes, never the message.
    private static void SendXForward(SmtpSession session, DownstreamClient downstream, CancellationToken ct)
    {
        if (downstream.Capabilities.XForward.Count == 0) return;
        var client = session.RemoteEndPoint as IPEndPoint;
        var address = GatewaySession.ClientAddress(session);
        List<KeyValuePair<string, string>> attributes =
        [
            new("NAME", "[UNAVAILABLE]"),   // no reverse DNS lookups here
            new("ADDR", address is null ? "[UNAVAILABLE]" : address.AddressFamily == AddressFamily.InterNetworkV6 ? "IPV6:" + address : address.ToString()),
            new("PORT", client is null ? "[UNAVAILABLE]" : client.Port.ToString(CultureInfo.InvariantCulture)),
            new("PROTO", session.Extended ? "ESMTP" : "SMTP"),
            new("HELO", session.HeloName ?? "[UNAVAILABLE]"),
            new("IDENT", session.Id),
            new("SOURCE", address is not null && IPAddress.IsLoopback(address) ? "LOCAL" : "REMOTE"),
        ];
        Task<SmtpReply?> sent;
        try { sent = downstream.XForwardAsync(attributes, ct); }
        catch (DownstreamException) { return; }   // the MAIL that follows reports the broken connection
        _ = sent.ContinueWith(static (t, id) =>
        {
            if (t.IsCompletedSuccessfully && t.Result is { IsPositiveCompletion: false } refused)
                Log.Warn($"session={id} downstream refused XFORWARD: {refused}");
        }, session.Id, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private static Task<SmtpReply> Send(Func<Task<SmtpReply>> send)
    {
        try { return send(); }
        catch (DownstreamException e) { return Task.FromException<SmtpReply>(e); }
    }

    private async Task<SmtpReply> MapAsync(SmtpSession session, Task<SmtpReply> pending)
    {
        try
        {
            return DownstreamReplies.MapFinal(await pending.ConfigureAwait(false));
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={session.Id} downstream failed: {e.Message}");
            ctx.Metrics.DownstreamError();
            return DownstreamReplies.Unavailable;
        }
    }

    private static string? Join(IEnumerable<string> parameters)
    {
        var text = string.Join(' ', parameters);
        return text.Length == 0 ? null : text;
    }
}
