using System.Buffers;
using System.Net.Security;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.SmtpCore.Server;

// The policy seam between the protocol and the product: the session calls these in the
// order the client drives it, and only after its own syntax, sequence and limit checks.
// Replies come back typed; the session writes them. A handler that throws gets 451 4.3.0
// for that command, and the transaction is dropped.
public interface ISmtpSessionHandler
{
    // null: the normal 220 banner; otherwise this reply is sent (554 or 421) and the session closes.
    ValueTask<SmtpReply?> OnConnectAsync(SmtpSession session, CancellationToken ct);

    // Adds lines to the EHLO reply after the session's own (PIPELINING, SIZE, ...): DSN, STARTTLS, AUTH.
    void AddExtensions(SmtpSession session, List<string> lines);

    // null: accept (250); otherwise the reply to send.
    ValueTask<SmtpReply?> OnHeloAsync(SmtpSession session, string domain, CancellationToken ct);

    ValueTask<SmtpResponse> OnMailAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct);

    ValueTask<SmtpResponse> OnRcptAsync(SmtpSession session, SmtpTransaction tx, SmtpRecipient recipient, CancellationToken ct);

    // Pipelined work the handler buffered (the downstream's commands) must go out now.
    ValueTask FlushAsync(SmtpSession session, CancellationToken ct);

    // The content is about to arrive: where to put it (the message buffer).
    IBufferWriter<byte> OpenContent(SmtpSession session, SmtpTransaction tx);

    // More of the message is in the buffer OpenContent gave: called between reads while the
    // content is still coming and has broken no rule so far, so a handler may pass it on (the
    // gateway forwards large mail while it arrives). Reading stops while this runs. A handler
    // that throws is not called again for the message, which is answered 451 4.3.0 at its end.
    ValueTask OnContentArrivedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) => ValueTask.CompletedTask;

    // The whole message arrived and passed the size and line-ending checks.
    ValueTask<SmtpReply> OnMessageAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct);

    // The transaction ended without OnMessageAsync's reply being the last word: RSET, a new
    // HELO/EHLO, a refused message, a disconnect. Free the content and reset the downstream.
    ValueTask OnTransactionAbortedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct);

    // The session is over (QUIT, timeout, disconnect, shutdown).
    ValueTask OnCloseAsync(SmtpSession session);

    // Told about handler failures and TLS failures; null: they are only answered, not reported.
    ISmtpSessionObserver? Observer => null;

    // The STARTTLS handshake succeeded and the session forgot its EHLO, transaction and AUTH
    // (RFC 3207 §4.2): whatever the handler keeps for the old state must be forgotten too.
    ValueTask OnTlsStartedAsync(SmtpSession session, CancellationToken ct) => ValueTask.CompletedTask;

    // STARTTLS (RFC 3207): the server side of the handshake, or null when TLS is not offered.
    SslServerAuthenticationOptions? GetTlsOptions(SmtpSession session) => null;

    // AUTH (RFC 4954): which mechanisms are offered now.
    SaslOffer GetAuthOffer(SmtpSession session) => SaslOffer.None;

    // Before the client is asked for credentials: null to go on, or a refusal (454 4.7.0 while
    // this client is throttled after failures, 421 to close).
    ValueTask<SmtpReply?> OnAuthStartAsync(SmtpSession session, string mechanism, CancellationToken ct) =>
        ValueTask.FromResult<SmtpReply?>(null);

    // The verdict on the credentials: 235 makes UserName the session's authenticated user;
    // anything else is sent as it is (535 5.7.8, 454 4.7.0; 421 also closes the connection).
    ValueTask<SmtpReply> OnAuthenticateAsync(SmtpSession session, SaslCredentials credentials, CancellationToken ct) =>
        ValueTask.FromResult(new SmtpReply(535, "5.7.8", "Authentication credentials invalid"));
}
