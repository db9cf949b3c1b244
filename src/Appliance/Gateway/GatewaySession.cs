// The gateway's policy for one client connection: the seam between the SMTP session and the
// product. Relay rights are decided here before anything reaches the downstream
// (Access/RelayPolicy); the rest is delegated, one job per piece:
//   DownstreamLease    the session's downstream connection (connect, reuse, RSET, drop)
//   EnvelopeRelay      MAIL/RCPT/XFORWARD to the downstream, its replies back to the client
//   SmtpAuthenticator  SMTP AUTH against the passwd file or the downstream
//   MessagePipeline    content → scan job → verdict → disposition
//   DetectionHandler   actions, quarantine, notifications for a virus or banned attachment
//   MessageDelivery    trace headers and the message to the downstream, its final reply back
//   TransactionLog     the message log line for each transaction
// Nothing is acknowledged to the client that the downstream has not accepted.
using System.Net;
using System.Net.Security;
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal sealed class GatewaySession : ISmtpSessionHandler
{
    private readonly GatewayContext _ctx;
    private readonly DownstreamLease _downstream;
    private readonly EnvelopeRelay _envelope;
    private readonly SmtpAuthenticator _auth;
    private readonly MessagePipeline _pipeline;
    private ClientAccess _access = new(null, false, null);

    public GatewaySession(GatewayContext ctx)
    {
        _ctx = ctx;
        _downstream = new DownstreamLease(ctx);
        _envelope = new EnvelopeRelay(ctx, _downstream);
        _auth = new SmtpAuthenticator(ctx, _downstream);
        var log = new TransactionLog(ctx);
        var delivery = new MessageDelivery(ctx, _downstream, log);
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

    public void AddExtensions(SmtpSession session, List<string> lines)
    {
        if (_ctx.DownstreamCapabilities?.Dsn == true) lines.Add("DSN");
    }

    public ValueTask<SmtpReply?> OnHeloAsync(SmtpSession session, string domain, CancellationToken ct) =>
        ValueTask.FromResult<SmtpReply?>(null);

    public ValueTask<SmtpResponse> OnMailAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        var state = new GatewayTransaction();
        tx.HandlerState = state;
        return _envelope.MailAsync(session, tx, state, ct);
    }

    public ValueTask<SmtpResponse> OnRcptAsync(SmtpSession session, SmtpTransaction tx, SmtpRecipient recipient, CancellationToken ct)
    {
        SmtpReply? refusal = _ctx.Relay.OnRecipient(_access, session.AuthenticatedUser, recipient.Path, out _);
        if (refusal is not null)
        {
            Log.Info($"session={session.Id} client={ClientAddress(session)} rcpt={recipient.Path.Mailbox} refused: {refusal}");
            _ctx.Metrics.RelayRefused();
            return ValueTask.FromResult<SmtpResponse>(refusal);
        }
        return ValueTask.FromResult(_envelope.Rcpt(session, recipient, ct));
    }

    public ValueTask FlushAsync(SmtpSession session, CancellationToken ct) => _downstream.FlushAsync(ct);

    public System.Buffers.IBufferWriter<byte> OpenContent(SmtpSession session, SmtpTransaction tx) =>
        _pipeline.OpenContent(GatewayTransaction.Of(tx));

    public ValueTask<SmtpReply> OnMessageAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) =>
        _pipeline.OnMessageAsync(session, tx, ct);

    public ValueTask OnTransactionAbortedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) =>
        _pipeline.AbortAsync(session, tx);

    public async ValueTask OnCloseAsync(SmtpSession session) => await _downstream.DropAsync().ConfigureAwait(false);
}
