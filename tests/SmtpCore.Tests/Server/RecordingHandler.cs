using System.Buffers;
using System.Net.Security;
using Portcullis.SmtpCore.Server;

namespace Portcullis.SmtpCore.Tests.Server;

// Accepts everything and records what happened; tests override single steps with the knobs.
internal sealed class RecordingHandler : ISmtpSessionHandler, ISmtpSessionObserver
{
    private readonly object _gate = new();
    private readonly List<byte[]> _messages = [];
    private readonly List<string> _events = [];

    public SmtpReply? Refuse { get; set; }
    public Func<SmtpTransaction, SmtpResponse>? Mail { get; set; }
    public Func<SmtpRecipient, SmtpResponse>? Rcpt { get; set; }
    public Func<SmtpTransaction, SmtpReply>? Message { get; set; }
    public List<string> Extensions { get; } = [];
    public SslServerAuthenticationOptions? Tls { get; set; }
    public SaslOffer AuthOffer { get; set; } = SaslOffer.None;
    public Func<SaslCredentials, SmtpReply>? Authenticate { get; set; }
    public SmtpReply? AuthStart { get; set; }
    public TaskCompletionSource Closed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public IReadOnlyList<byte[]> Messages { get { lock (_gate) return [.. _messages]; } }
    public IReadOnlyList<string> Events { get { lock (_gate) return [.. _events]; } }

    private void Record(string e) { lock (_gate) _events.Add(e); }

    public ValueTask<SmtpReply?> OnConnectAsync(SmtpSession session, CancellationToken ct)
    {
        Record("connect");
        return ValueTask.FromResult(Refuse);
    }

    public void AddExtensions(SmtpSession session, List<string> lines) => lines.AddRange(Extensions);

    public ValueTask<SmtpReply?> OnHeloAsync(SmtpSession session, string domain, CancellationToken ct)
    {
        Record($"helo {domain}");
        return ValueTask.FromResult<SmtpReply?>(null);
    }

    public ValueTask<SmtpResponse> OnMailAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        Record($"mail {tx.ReversePath}");
        return ValueTask.FromResult(Mail?.Invoke(tx) ?? new SmtpReply(250, "2.1.0", "Sender OK"));
    }

    public ValueTask<SmtpResponse> OnRcptAsync(SmtpSession session, SmtpTransaction tx, SmtpRecipient recipient, CancellationToken ct)
    {
        Record($"rcpt {recipient.Path}");
        return ValueTask.FromResult(Rcpt?.Invoke(recipient) ?? new SmtpReply(250, "2.1.5", "Recipient OK"));
    }

    public ValueTask FlushAsync(SmtpSession session, CancellationToken ct) => ValueTask.CompletedTask;

    public IBufferWriter<byte> OpenContent(SmtpSession session, SmtpTransaction tx)
    {
        Record("content");
        var buffer = new ArrayBufferWriter<byte>();
        tx.HandlerState = buffer;
        return buffer;
    }

    // Set: every OnContentArrivedAsync is recorded as "arrived <bytes so far>" and handed to it.
    public Func<SmtpTransaction, long, ValueTask>? ContentArrived { get; set; }

    public ValueTask OnContentArrivedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        if (ContentArrived is not { } arrived) return ValueTask.CompletedTask;
        long size = ((ArrayBufferWriter<byte>)tx.HandlerState!).WrittenCount;
        Record($"arrived {size}");
        return arrived(tx, size);
    }

    public ValueTask<SmtpReply> OnMessageAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        Record("message");
        var reply = Message?.Invoke(tx);
        int n;
        lock (_gate)
        {
            _messages.Add(((ArrayBufferWriter<byte>)tx.HandlerState!).WrittenSpan.ToArray());
            n = _messages.Count;
        }
        return ValueTask.FromResult(reply ?? new SmtpReply(250, "2.0.0", $"Queued as M{n}"));
    }

    public ValueTask OnTransactionAbortedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        Record("aborted");
        return ValueTask.CompletedTask;
    }

    public SslServerAuthenticationOptions? GetTlsOptions(SmtpSession session) => Tls;

    // The observer: handler and TLS failures, and the end of a STARTTLS, become events too.
    public ISmtpSessionObserver Observer => this;

    public void OnHandlerFailure(SmtpSession session, SmtpTransaction? tx, string stage, Exception error) =>
        Record($"handler failed at {stage}{(tx is null ? "" : " in a transaction")}: {error.Message}");

    public void OnTlsFailure(SmtpSession session, Exception error) => Record("tls failed");

    public ValueTask OnTlsStartedAsync(SmtpSession session, CancellationToken ct)
    {
        Record("tls started");
        return ValueTask.CompletedTask;
    }

    public SaslOffer GetAuthOffer(SmtpSession session) => AuthOffer;

    public ValueTask<SmtpReply?> OnAuthStartAsync(SmtpSession session, string mechanism, CancellationToken ct) =>
        ValueTask.FromResult(AuthStart);

    public ValueTask<SmtpReply> OnAuthenticateAsync(SmtpSession session, SaslCredentials credentials, CancellationToken ct)
    {
        Record($"auth {credentials.Mechanism} {credentials.AuthorizationId}/{credentials.UserName}/{credentials.Password}");
        return ValueTask.FromResult(Authenticate?.Invoke(credentials)
            ?? (credentials.Password == "secret" ? new SmtpReply(235, "2.7.0", "Authentication successful") : new SmtpReply(535, "5.7.8", "Authentication credentials invalid")));
    }

    public ValueTask OnCloseAsync(SmtpSession session)
    {
        Record("close");
        Closed.TrySetResult();
        return ValueTask.CompletedTask;
    }
}
