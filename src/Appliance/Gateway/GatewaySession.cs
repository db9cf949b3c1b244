// The gateway's policy for one client connection: the seam between the SMTP session and the
// product. Relay rights are decided here before anything reaches the downstream
// (Access/RelayPolicy); the rest is delegated, one job per piece:
//   DownstreamLease    the session's downstream connection (connect, reuse, RSET, drop)
//   EnvelopeRelay      MAIL/RCPT/XFORWARD to the downstream, its replies back to the client
//   SmtpAuthenticator  SMTP AUTH against the passwd file or the downstream
//   MessagePipeline    content → scan job → verdict → disposition
//   DetectionHandler   actions, quarantine, notifications for a virus or banned attachment
//   MessageDelivery    trace headers and the message to the downstream, its final reply back
//   TransactionLog     the message log line for each transaction, delivered or not
// It is also the session's observer: handler failures and TLS failures are logged here.
// Nothing is acknowledged to the client that the downstream has not accepted.
using System.Net;
using System.Net.Security;
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal sealed class GatewaySession : ISmtpSessionHandler, ISmtpSessionObserver
{
    private readonly GatewayContext _ctx;
    private readonly DownstreamLease _downstream;
    private readonly EnvelopeRelay _envelope;
    private readonly SmtpAuthenticator _auth;
    private readonly MessagePipeline _pipeline;
    private readonly TransactionLog _log;
    private ClientAccess _access = ClientAccess.Unknown;

    public GatewaySession(GatewayContext ctx)
    {
        _ctx = ctx;
        _downstream = new DownstreamLease(ctx);
        var log = _log = new TransactionLog(ctx);
        _envelope = new EnvelopeRelay(ctx, _downstream, log);
        _auth = new SmtpAuthenticator(ctx, _downstream, log);
        var delivery = new MessageDelivery(ctx, _downstream, log, _envelope);
        _pipeline = new MessagePipeline(ctx, _downstream, log, delivery, new DetectionHandler(ctx, _downstream, log, delivery));
    }

    // The client's address, IPv4-mapped IPv6 written as IPv4.
    public static IPAddress? ClientAddress(SmtpSession session) =>
        (session.RemoteEndPoint as IPEndPoint)?.Address is { } a && a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : (session.RemoteEndPoint as IPEndPoint)?.Address;

    public ValueTask<SmtpReply?> OnConnectAsync(SmtpSession session, CancellationToken ct)
    {
        var refusal = _ctx.Relay.OnConnect(ClientAddress(session), out _access);
        if (refusal is not null) Log.Info($"session={session.Id} client={ClientAddress(session)} refused by rule {_access.Rule}");
        return ValueTask.FromResult(refusal);
    }

    public SslServerAuthenticationOptions? GetTlsOptions(SmtpSession session) => _ctx.Tls?.ServerOptions;

    public SaslOffer GetAuthOffer(SmtpSession session) => _auth.Offer;

    public ValueTask<SmtpReply?> OnAuthStartAsync(SmtpSession session, string mechanism, CancellationToken ct) =>
        ValueTask.FromResult(_auth.Start(session));

    public ValueTask<SmtpReply> OnAuthenticateAsync(SmtpSession session, SaslCredentials credentials, CancellationToken ct) =>
        _auth.AuthenticateAsync(session, credentials, ct);

    // EHLO is answered before this session has a downstream connection: DSN is offered when the
    // last connection any session made had it (a hint). MAIL and RCPT never fail for it: when this
    // session's own connection lacks DSN, EnvelopeRelay drops the parameters (RFC 3461 §4).
    // With [queue] mode = always the gateway itself delivers and sends the DSNs: it offers DSN.
    public void AddExtensions(SmtpSession session, List<string> lines)
    {
        if (_ctx.DownstreamCapabilities?.Dsn == true || _ctx.Config.Queue.Mode == Configuration.QueueMode.Always) lines.Add("DSN");
    }

    public ValueTask<SmtpReply?> OnHeloAsync(SmtpSession session, string domain, CancellationToken ct) =>
        ValueTask.FromResult<SmtpReply?>(null);

    public ValueTask<SmtpResponse> OnMailAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        var state = new GatewayTransaction();
        tx.HandlerState = state;
        return _envelope.MailAsync(session, tx, state, ct);
    }

    public async ValueTask<SmtpResponse> OnRcptAsync(SmtpSession session, SmtpTransaction tx, SmtpRecipient recipient, CancellationToken ct)
    {
        // In fallback mode a lost connection at MAIL queues the transaction: its RCPTs wait for that answer.
        if (GatewayTransaction.Of(tx).PendingMail is { IsCompleted: false } mail && _ctx.Config.Queue.Mode == Configuration.QueueMode.Fallback)
        {
            try { await _downstream.FlushAsync(ct).ConfigureAwait(false); }
            catch (SmtpCore.Downstream.DownstreamException) { }   // MAIL's reply reports it
            await mail.ConfigureAwait(false);
        }
        SmtpReply? refusal = _ctx.Relay.OnRecipient(_access, session.AuthenticatedUser, recipient.Path, out var right);
        if (refusal is not null)
        {
            Log.Info($"session={session.Id} client={ClientAddress(session)} rcpt={recipient.Path.Mailbox} refused: {refusal}");
            _ctx.Metrics.RelayRefused();
            GatewayTransaction.Of(tx).RelayRefusal = refusal;
            return refusal;
        }
        var state = GatewayTransaction.Of(tx);
        if (state.Queued) return QueuedRecipient(session, state, recipient.Path, right);
        return _envelope.Rcpt(session, state, recipient, ct);
    }

    // No server to ask about a queued transaction's recipient: [relay] recipients_file decides
    // for local domains (the relay rules already allowed it).
    private SmtpReply QueuedRecipient(SmtpSession session, GatewayTransaction state, SmtpCore.Protocol.SmtpPath recipient, string right)
    {
        bool local = right == "local"
                     || (_ctx.Relay is RelayPolicy policy && !recipient.Domain.StartsWith('[') && policy.IsLocal(MailDomain.Normalize(recipient.Domain)));
        if (local && _ctx.KnownRecipients?.Current is { } known && !known.Knows(recipient))
        {
            var unknown = new SmtpReply(550, "5.1.1", $"<{recipient.Mailbox}>: Recipient address rejected: unknown user");
            Log.Info($"session={session.Id} client={ClientAddress(session)} rcpt={recipient.Mailbox} refused: not in recipients_file");
            state.RelayRefusal = unknown;
            return unknown;
        }
        return new SmtpReply(250, "2.1.5", "Recipient OK");
    }

    public ValueTask FlushAsync(SmtpSession session, CancellationToken ct) => _downstream.FlushAsync(ct);

    public System.Buffers.IBufferWriter<byte> OpenContent(SmtpSession session, SmtpTransaction tx) =>
        _pipeline.OpenContent(GatewayTransaction.Of(tx));

    public ValueTask OnContentArrivedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) =>
        _pipeline.OnContentArrivedAsync(session, tx, ct);

    public ValueTask<SmtpReply> OnMessageAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) =>
        _pipeline.OnMessageAsync(session, tx, ct);

    public async ValueTask OnTransactionAbortedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        await _pipeline.AbortAsync(session, tx).ConfigureAwait(false);
        // Without content (the pipeline logs those) the transaction still gets its one line.
        if (tx.HandlerState is GatewayTransaction { Finished: false } state) _log.Aborted(session, tx, state, 0);
    }

    public async ValueTask OnCloseAsync(SmtpSession session) => await _downstream.DropAsync().ConfigureAwait(false);

    // RFC 3207 §4.2: the client's AUTH is forgotten, so is a downstream login made with it.
    public async ValueTask OnTlsStartedAsync(SmtpSession session, CancellationToken ct) =>
        await _downstream.ForgetLoginAsync().ConfigureAwait(false);

    public ISmtpSessionObserver Observer => this;

    public void OnHandlerFailure(SmtpSession session, SmtpTransaction? tx, string stage, Exception error)
    {
        Log.Error($"session={session.Id} client={ClientAddress(session)} gateway error at {stage}: {error}");
        if (tx?.HandlerState is GatewayTransaction state) _log.HandlerFailed(session, tx, state, stage, error);
    }

    public void OnTlsFailure(SmtpSession session, Exception error) =>
        Log.Warn($"session={session.Id} client={ClientAddress(session)} TLS handshake failed: {error.Message}");
}
