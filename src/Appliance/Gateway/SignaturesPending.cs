// The first start before freshclam has run: no signatures yet. The gateway runs anyway and every
// MAIL gets 451 4.3.0 (the client keeps the message and retries, RFC 5321 §4.2.5), so no mail is
// accepted unscanned and none is lost; the moment an engine is loaded the same sessions go on as
// usual. Wraps the session handler; everything else passes through.
using System.Net;
using System.Net.Security;
using Portcullis.Appliance.Logging;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Protocol;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal sealed class SignaturesPending(GatewayContext ctx, ISmtpSessionHandler inner) : ISmtpSessionHandler
{
    public static readonly SmtpReply NotLoaded = new(451, "4.3.0", "Virus signatures are not loaded yet, try again later");

    public ValueTask<SmtpResponse> OnMailAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        if (ctx.Engines.IsLoaded)
        {
            return inner.OnMailAsync(session, tx, ct);
        }

        var client = (session.RemoteEndPoint as IPEndPoint)?.Address;
        ctx.Log.NotDelivered(new MessageLogEntry
        {
            Session = session.Id,
            Client = (client is { IsIPv4MappedToIPv6: true } ? client.MapToIPv4() : client)?.ToString() ?? "",
            Helo = session.HeloName ?? "",
            User = session.AuthenticatedUser ?? "",
            From = tx.ReversePath.ToString(),
        }, NotDeliveredReason.SignaturesNotLoaded, NotLoaded.ToString());
        return ValueTask.FromResult<SmtpResponse>(NotLoaded);
    }

    public ValueTask<SmtpReply?> OnConnectAsync(SmtpSession session, CancellationToken ct) => inner.OnConnectAsync(session, ct);

    public void AddExtensions(SmtpSession session, List<string> lines) => inner.AddExtensions(session, lines);

    public ValueTask<SmtpReply?> OnHeloAsync(SmtpSession session, string domain, CancellationToken ct) => inner.OnHeloAsync(session, domain, ct);

    public ValueTask<SmtpResponse> OnRcptAsync(SmtpSession session, SmtpTransaction tx, SmtpRecipient recipient, CancellationToken ct) =>
        inner.OnRcptAsync(session, tx, recipient, ct);

    public ValueTask FlushAsync(SmtpSession session, CancellationToken ct) => inner.FlushAsync(session, ct);

    public System.Buffers.IBufferWriter<byte> OpenContent(SmtpSession session, SmtpTransaction tx) => inner.OpenContent(session, tx);

    public ValueTask OnContentArrivedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) => inner.OnContentArrivedAsync(session, tx, ct);

    public ValueTask<SmtpReply> OnMessageAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) => inner.OnMessageAsync(session, tx, ct);

    public ValueTask OnTransactionAbortedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) => inner.OnTransactionAbortedAsync(session, tx, ct);

    public ValueTask OnCloseAsync(SmtpSession session) => inner.OnCloseAsync(session);

    public SslServerAuthenticationOptions? GetTlsOptions(SmtpSession session) => inner.GetTlsOptions(session);

    public SaslOffer GetAuthOffer(SmtpSession session) => inner.GetAuthOffer(session);

    public ValueTask<SmtpReply?> OnAuthStartAsync(SmtpSession session, string mechanism, CancellationToken ct) => inner.OnAuthStartAsync(session, mechanism, ct);

    public ValueTask<SmtpReply> OnAuthenticateAsync(SmtpSession session, SaslCredentials credentials, CancellationToken ct) =>
        inner.OnAuthenticateAsync(session, credentials, ct);
}
