// The envelope towards the downstream: MAIL with the client's parameters mapped to what the
// downstream offers (RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN), RCPT
// with its DSN parameters, XFORWARD ahead of MAIL, and the downstream's replies mapped back to
// the client. Commands are pipelined when the downstream offers PIPELINING; the client's own
// pipelining group decides when they are flushed. DSN is decided per connection: when the
// session's own downstream lacks it, the DSN parameters are dropped (RFC 3461 §4 lets a relay
// do so), never refused. Before the message goes out, a connection that sat idle through a slow
// DATA and the scan is checked, and replaced with the envelope replayed if it died.
using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal sealed class EnvelopeRelay(GatewayContext ctx, DownstreamLease lease, TransactionLog log)
{
    // Pooled builder: once per message, awaited once by the session.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<SmtpResponse> MailAsync(SmtpSession session, SmtpTransaction tx, GatewayTransaction state, CancellationToken ct)
    {
        if (ctx.Config.Queue.Mode == QueueMode.Always && QueueAllowed(session)) return Queued(state, "[queue] mode = always");
        DownstreamClient downstream;
        ClientIdentity.Presented identity;
        try
        {
            downstream = await lease.AcquireAsync(ct).ConfigureAwait(false);
            identity = await ClientIdentity.PresentAsync(ctx, session, downstream, lease, static async (lease, ct) =>
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
            await lease.DropAsync().ConfigureAwait(false);
            if (FallsBackToQueue(session))
                return Queued(state, "downstream unavailable: " + e.Message);
            log.MailRefused(session, tx, state, DownstreamReplies.Unavailable, "unavailable: " + e.Message);
            return DownstreamReplies.Unavailable;
        }
        if (identity.Refusal is { } refused)
        {
            log.MailRefused(session, tx, state, refused, refused.ToString());
            return refused;
        }

        if (!TryMailParameters(tx, downstream.Capabilities, out string? parameters, out SmtpReply? refusal))
        {
            log.MailRefused(session, tx, state, refusal, "refused by gateway: " + refusal);
            return refusal;
        }
        state.MailSent = true;
        if (!identity.ByXClient) SendXForward(session, downstream, ct);
        var mapped = MapMailAsync(session, tx, state, SendMail(downstream, tx, parameters, ct));
        state.PendingMail = mapped;
        return new SmtpResponse(mapped);
    }

    // The transaction goes to the queue ([queue] mode): no downstream for it in this session.
    private static SmtpReply Queued(GatewayTransaction state, string why)
    {
        state.QueueReason = why;
        return new SmtpReply(250, "2.1.0", "Sender OK");
    }

    // [queue] mode = fallback, and this session's mail may wait in the queue (at MAIL, and when the
    // server goes away after the envelope).
    public bool FallsBackToQueue(SmtpSession session) => ctx.Config.Queue.Mode == QueueMode.Fallback && QueueAllowed(session);

    // [auth] downstream = yes: the client's login lives on this session's downstream connection,
    // so its mail cannot wait in the queue for another one; it stays in-line.
    private bool QueueAllowed(SmtpSession session)
    {
        if (session.AuthenticatedUser is null || ctx.Passwords is not null || !ctx.Config.Auth.Downstream) return true;
        Log.Info($"session={session.Id} not queued: logged in at the downstream ([auth] downstream = yes), the message stays in-line");
        return false;
    }

    private static bool TryMailParameters(SmtpTransaction tx, DownstreamCapabilities caps, out string? parameters,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out SmtpReply? refusal) =>
        TryMailParameters(tx.DeclaredSize, tx.Body == BodyType.EightBitMime, tx.SmtpUtf8, tx.DsnRet, tx.DsnEnvId, caps, out parameters, out refusal);

    // The client's MAIL parameters as this downstream connection can take them: false with the
    // refusal when it cannot carry the message at all (8BITMIME, SMTPUTF8). Queue delivery too.
    internal static bool TryMailParameters(long? declaredSize, bool eightBitMime, bool smtpUtf8, string? ret, string? envId,
        DownstreamCapabilities caps, out string? parameters,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out SmtpReply? refusal)
    {
        parameters = null;
        refusal = null;
        if (declaredSize is long size && caps.MaxSize is not null)
            parameters = Then(parameters, $"SIZE={size + 1024}"); // room for the trace headers we add
        if (eightBitMime)
        {
            if (!caps.EightBitMime) refusal = new SmtpReply(555, "5.6.3", "8BITMIME is not accepted by the mail server behind this gateway");
            parameters = Then(parameters, "BODY=8BITMIME");
        }
        if (smtpUtf8)
        {
            if (!caps.SmtpUtf8) refusal ??= new SmtpReply(555, "5.6.7", "SMTPUTF8 is not accepted by the mail server behind this gateway");
            parameters = Then(parameters, "SMTPUTF8");
        }
        // RFC 3461 §4: a relay to a server without DSN drops RET and ENVID rather than refusing.
        if (caps.Dsn)
        {
            if (ret is not null) parameters = Then(parameters, "RET=" + ret);
            if (envId is not null) parameters = Then(parameters, "ENVID=" + envId);
        }
        return refusal is null;

        // Most MAILs carry none or one: no list to join.
        static string Then(string? parameters, string parameter) => parameters is null ? parameter : parameters + " " + parameter;
    }

    // RFC 3461 §4: NOTIFY and ORCPT go only to a downstream connection that has DSN.
    private static string? RcptParameters(SmtpRecipient recipient, DownstreamCapabilities caps) =>
        recipient.Parameters.Count == 0 ? null : RcptParameters(recipient.Parameters, caps);

    internal static string? RcptParameters(IEnumerable<KeyValuePair<string, string?>> parameters, DownstreamCapabilities caps) =>
        Join(parameters
            .Where(p => caps.Dsn || p.Key is not ("NOTIFY" or "ORCPT"))
            .Select(p => p.Value is null ? p.Key : p.Key + "=" + p.Value));

    // A recipient the relay policy let through: its RCPT goes downstream, the downstream's reply back.
    public SmtpResponse Rcpt(SmtpSession session, GatewayTransaction state, SmtpRecipient recipient, CancellationToken ct)
    {
        if (lease.Usable is not { } downstream) return DownstreamReplies.Unavailable;

        return new SmtpResponse(MapRcptAsync(session, state, SendRcpt(downstream, recipient, ct)));
    }

    // The message is in and scanned; the downstream connection holding its envelope has sat idle
    // all that time. Of the two ways out (open the downstream transaction only once the
    // message is in, as Postfix's speed_adjust, or keep it and replay it) this keeps the in-line
    // envelope, so unknown users are still refused at RCPT time with the downstream's own reply,
    // and replays it on a fresh connection when the old one died (the server's idle timeout) or
    // does not answer a NOOP after DownstreamTimings.ProbeAfter idle, or the pool lent it to another
    // session while this one's message came in (DownstreamPool.Park). The client gets 451 only
    // when the replayed replies differ from the 2xx it was given. Returns the connection to send
    // the message on, or null and why not (Unreachable: no server answered, as opposed to a
    // server that answered differently).
    public ValueTask<(DownstreamClient? Downstream, string Problem, bool Unreachable)> ReadyForDataAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        // The usual case, a connection used moments ago, costs no state machine.
        if (lease.Usable is { } current && lease.Idle < ctx.DownstreamTimings.ProbeAfter) return new((current, "", false));
        return new(ProbeOrReplayAsync(session, tx, ct));
    }

    private async Task<(DownstreamClient? Downstream, string Problem, bool Unreachable)> ProbeOrReplayAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        if (lease.Usable is { } current && await lease.ProbeAsync().ConfigureAwait(false))
            return (current, "", false);
        return await ReplayAsync(session, tx, ct).ConfigureAwait(false);
    }

    // The envelope again on a fresh connection.
    private async Task<(DownstreamClient? Downstream, string Problem, bool Unreachable)> ReplayAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        // A connection lent to another session is the pool doing its job, one closed under a
        // forwarded message that changed (a tag) is the gateway's own doing: no log line for either.
        if (!lease.WasLent && !lease.Abandoned)
            Log.Info($"session={session.Id} the downstream connection was lost while the message came in: replaying the envelope on a new one");
        DownstreamClient fresh;
        try
        {
            fresh = await lease.ReplaceAsync(ct).ConfigureAwait(false);
        }
        catch (DownstreamException e)
        {
            ctx.Metrics.DownstreamError();
            return (null, "unavailable: " + e.Message, true);
        }
        if (!TryMailParameters(tx, fresh.Capabilities, out string? parameters, out SmtpReply? refusal))
        {
            await lease.ResetAsync().ConfigureAwait(false);
            return (null, "replayed on a new connection: " + refusal, false);
        }
        try
        {
            var identity = await ClientIdentity.PresentAsync(ctx, session, fresh, lease, static (lease, ct) => lease.ReplaceAsync(ct), ct).ConfigureAwait(false);
            fresh = identity.Downstream;
            if (identity.Refusal is { } refused)
            {
                await lease.ResetAsync().ConfigureAwait(false);
                return (null, "replayed on a new connection: XCLIENT: " + refused, false);
            }
            if (!identity.ByXClient) SendXForward(session, fresh, ct);
            var mail = SendMail(fresh, tx, parameters, ct);
            var rcpts = tx.Recipients.Select(r => (r.Path, Reply: SendRcpt(fresh, r, ct))).ToList();
            await fresh.FlushAsync(ct).ConfigureAwait(false);
            string? differs = await mail.ConfigureAwait(false) is { IsPositiveCompletion: false } mailReply ? "MAIL: " + mailReply : null;
            foreach (var (path, reply) in rcpts)
                if (await reply.ConfigureAwait(false) is { IsPositiveCompletion: false } rcptReply)
                    differs ??= $"RCPT {path}: {rcptReply}";
            lease.Touch();
            if (differs is null) return (fresh, "", false);
            await lease.ResetAsync().ConfigureAwait(false);
            return (null, "replayed on a new connection: " + differs, false);
        }
        catch (DownstreamException e)
        {
            ctx.Metrics.DownstreamError();
            await lease.DropAsync().ConfigureAwait(false);
            return (null, "replayed on a new connection: " + e.Message, true);
        }
    }

    // Postfix's XFORWARD (XFORWARD_README): the downstream logs and decides on the real client.
    // Sent before every MAIL (Postfix forgets the attributes at the end of a transaction), pipelined
    // with it; a refusal only costs the attributes, never the message.
    private static void SendXForward(SmtpSession session, DownstreamClient downstream, CancellationToken ct)
    {
        if (downstream.Capabilities.XForward.Count == 0) return;
        SendXForward(downstream, XForwardAttributes(GatewaySession.ClientAddress(session), (session.RemoteEndPoint as IPEndPoint)?.Port,
            session.Extended, session.HeloName, session.Id), session.Id, ct);
    }

    // The attributes for a client, from the session in-line or from a queue entry later.
    internal static List<KeyValuePair<string, string>> XForwardAttributes(IPAddress? address, int? port, bool extended, string? helo, string ident) =>
    [
        new("NAME", "[UNAVAILABLE]"),   // no reverse DNS lookups here
        new("ADDR", ClientIdentity.FormatAddress(address)),
        new("PORT", port is int p ? p.ToString(CultureInfo.InvariantCulture) : "[UNAVAILABLE]"),
        new("PROTO", extended ? "ESMTP" : "SMTP"),
        new("HELO", string.IsNullOrEmpty(helo) ? "[UNAVAILABLE]" : helo),
        new("IDENT", ident),
        new("SOURCE", address is not null && IPAddress.IsLoopback(address) ? "LOCAL" : "REMOTE"),
    ];

    internal static void SendXForward(DownstreamClient downstream, List<KeyValuePair<string, string>> attributes, string logId, CancellationToken ct)
    {
        if (downstream.Capabilities.XForward.Count == 0) return;
        Task<SmtpReply?> sent;
        try { sent = downstream.XForwardAsync(attributes, ct); }
        catch (DownstreamException) { return; }   // the MAIL that follows reports the broken connection
        _ = sent.ContinueWith(static (t, id) =>
        {
            if (t.IsCompletedSuccessfully && t.Result is { IsPositiveCompletion: false } refused)
                Log.Warn($"session={id} downstream refused XFORWARD: {refused}");
        }, logId, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    // MAIL and RCPT as pending replies: a connection already broken fails the reply, not the caller.
    private static Task<SmtpReply> SendMail(DownstreamClient downstream, SmtpTransaction tx, string? parameters, CancellationToken ct)
    {
        try { return downstream.MailAsync(tx.ReversePath.ToString(), parameters, ct); }
        catch (DownstreamException e) { return Task.FromException<SmtpReply>(e); }
    }

    private static Task<SmtpReply> SendRcpt(DownstreamClient downstream, SmtpRecipient recipient, CancellationToken ct)
    {
        try { return downstream.RcptAsync(recipient.Path.ToString(), RcptParameters(recipient, downstream.Capabilities), ct); }
        catch (DownstreamException e) { return Task.FromException<SmtpReply>(e); }
    }

    // MAIL refused ends the transaction: its log line is written here.
    private async Task<SmtpReply> MapMailAsync(SmtpSession session, SmtpTransaction tx, GatewayTransaction state, Task<SmtpReply> pending)
    {
        // The connection went before MAIL was answered: in fallback mode the queue takes the transaction.
        if (ctx.Config.Queue.Mode == QueueMode.Fallback)
        {
            try
            {
                await pending.ConfigureAwait(false);
            }
            catch (DownstreamException e) when (QueueAllowed(session))
            {
                Log.Warn($"session={session.Id} downstream lost at MAIL: {e.Message}");
                ctx.Metrics.DownstreamError();
                state.MailSent = false;
                await lease.DropAsync().ConfigureAwait(false);
                return Queued(state, "downstream unavailable: " + e.Message);
            }
        }
        try
        {
            var said = await pending.ConfigureAwait(false);
            var reply = DownstreamReplies.MapFinal(said);
            if (!reply.IsPositiveCompletion) log.MailRefused(session, tx, state, reply, said.ToString());
            return reply;
        }
        catch (DownstreamException e)
        {
            var reply = Failed(session, e);
            log.MailRefused(session, tx, state, reply, "unavailable: " + e.Message);
            return reply;
        }
    }

    // A refused recipient is the reason in the log if the transaction ends without delivery.
    private async Task<SmtpReply> MapRcptAsync(SmtpSession session, GatewayTransaction state, Task<SmtpReply> pending)
    {
        SmtpReply reply;
        try { reply = DownstreamReplies.MapFinal(await pending.ConfigureAwait(false)); }
        catch (DownstreamException e) { reply = Failed(session, e); }
        if (!reply.IsPositiveCompletion) state.DownstreamRefusal = reply;
        return reply;
    }

    // The client's reply when the downstream connection failed before answering (its reason for
    // the log is "unavailable: " and the exception's message).
    private SmtpReply Failed(SmtpSession session, DownstreamException e)
    {
        Log.Warn($"session={session.Id} downstream failed: {e.Message}");
        ctx.Metrics.DownstreamError();
        return DownstreamReplies.Unavailable;
    }

    private static string? Join(IEnumerable<string> parameters)
    {
        var text = string.Join(' ', parameters);
        return text.Length == 0 ? null : text;
    }
}
