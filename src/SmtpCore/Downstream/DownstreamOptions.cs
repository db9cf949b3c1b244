using System.Net.Security;

namespace Portcullis.SmtpCore.Downstream;

// STARTTLS towards the downstream (RFC 3207): never, when offered, or always (no TLS: no mail).
public enum DownstreamTlsMode { None, Opportunistic, Required }

// Where and how the gateway talks to the real mail server. Timeouts follow RFC 5321 §4.5.3.2.
public sealed class DownstreamOptions
{
    public required string Host { get; init; }
    public int Port { get; init; } = 25;
    public required string HeloName { get; init; }
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(30);

    // Every reply except the one after the message data (§4.5.3.2.2-.5 allow up to 5 minutes).
    public TimeSpan ReplyTimeout { get; init; } = TimeSpan.FromMinutes(5);

    // The final reply after "." or BDAT LAST: §4.5.3.2.6 asks for at least 10 minutes.
    public TimeSpan DataReplyTimeout { get; init; } = TimeSpan.FromMinutes(10);

    public DownstreamTlsMode Tls { get; init; } = DownstreamTlsMode.None;

    // Target host and certificate checks; null: TargetHost = Host with the system's trust store.
    public SslClientAuthenticationOptions? TlsClientOptions { get; init; }

    // Further servers tried in order when this one cannot be reached or refuses the session
    // (connection refused or timed out, no greeting, 4xx/5xx at the greeting or EHLO, TLS
    // failure). Their own Alternatives are not followed.
    public IReadOnlyList<DownstreamOptions> Alternatives { get; init; } = [];
}
