namespace Portcullis.SmtpCore.Downstream;

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
}
