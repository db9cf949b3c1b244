using Portcullis.SmtpCore.Protocol;

namespace Portcullis.SmtpCore.Server;

// Limits and timeouts for one server session; defaults follow RFC 5321 §4.5.3.
public sealed class SmtpServerOptions
{
    public string HostName { get; init; } = "localhost";
    public string Greeting { get; init; } = "ESMTP";
    public int MaxLineLength { get; init; } = 2048;          // command line incl. CRLF (§4.5.3.1.4 plus extension room)
    public long MaxMessageSize { get; init; } = 50L << 20;
    public int MaxRecipients { get; init; } = 1000;
    public int MaxErrors { get; init; } = 10;
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromMinutes(5);   // §4.5.3.2.7
    public TimeSpan DataTimeout { get; init; } = TimeSpan.FromMinutes(3);      // §4.5.3.2.5, per read
    public int MinDataRate { get; init; } = 500;                               // bytes/s past DataTimeout for a whole message
    public BareNewlinePolicy BareNewline { get; init; } = BareNewlinePolicy.Normalize;
    public bool Chunking { get; init; } = true;
    public bool SmtpUtf8 { get; init; } = true;
    public bool EightBitMime { get; init; } = true;
    public bool Pipelining { get; init; } = true;
    // RFC 3207 §4: before STARTTLS only the commands the command table allows (EHLO, HELO,
    // STARTTLS, NOOP, QUIT) are answered; anything else gets 530 5.7.0.
    public bool RequireTls { get; init; }

    // The replies that name this server, built once for all its sessions.
    internal ServerReplies Replies => _replies ??= new ServerReplies(this);
    private ServerReplies? _replies;
    internal EhloBlock? LastEhlo;   // the extension lines last advertised, reused while they stay the same
}
