namespace Portcullis.SmtpCore.Server;

// What went wrong inside a session that the client only hears as a 451 or a closed connection:
// the handler's own failures and failed TLS handshakes. The session still answers and carries
// on as before; the observer is told so the product can log it. Calls come on the session's
// thread; an observer must not throw.
public interface ISmtpSessionObserver
{
    // The handler threw in `stage` (a command verb, "connect", "content", "message", "abort",
    // "close"). tx is the transaction that was open, if any, before it is aborted.
    void OnHandlerFailure(SmtpSession session, SmtpTransaction? tx, string stage, Exception error);

    // The STARTTLS handshake failed (or timed out); the connection is closed without a reply.
    void OnTlsFailure(SmtpSession session, Exception error);
}
