// The session's constant replies (RFC 5321 §4.2, enhanced codes RFC 3463), each a static or built
// once per server so that its wire bytes are encoded once (SmtpReply.WireBytes).
namespace Portcullis.SmtpCore.Server;

internal static class Replies
{
    public static readonly SmtpReply Ok = new(250, "2.0.0", "OK");
    public static readonly SmtpReply SyntaxNoArgs = new(501, "5.5.4", "Syntax error: no arguments allowed");
    public static readonly SmtpReply LocalError = new(451, "4.3.0", "Local error in processing, try again later");
    public static readonly SmtpReply Unrecognized = new(500, "5.5.2", "Command unrecognized");
    public static readonly SmtpReply LineTooLong = new(500, "5.5.2", "Line too long");
    public static readonly SmtpReply BareLineFeed = new(500, "5.5.2", "Command line must end with CRLF");
    public static readonly SmtpReply StartData = new(354, null, "End data with <CR><LF>.<CR><LF>");
    public static readonly SmtpReply TlsFirst = new(530, "5.7.0", "Must issue a STARTTLS command first");
    public static readonly SmtpReply HeloFirst = new(503, "5.5.1", "Send HELO or EHLO first");
    public static readonly SmtpReply NestedMail = new(503, "5.5.1", "Nested MAIL command");
    public static readonly SmtpReply MailBeforeRcpt = new(503, "5.5.1", "Need MAIL before RCPT");
    public static readonly SmtpReply MailBeforeData = new(503, "5.5.1", "Need MAIL before DATA");
    public static readonly SmtpReply MailBeforeBdat = new(503, "5.5.1", "Need MAIL before BDAT");
    public static readonly SmtpReply NoRecipients = new(554, "5.5.1", "No valid recipients");
    public static readonly SmtpReply NonAsciiAddress = new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
    public static readonly SmtpReply TooManyRecipients = new(452, "4.5.3", "Too many recipients");
    public static readonly SmtpReply TooLarge = new(552, "5.3.4", "Message size exceeds fixed maximum message size");
    public static readonly SmtpReply BareNewline = new(550, "5.6.0", "Bare CR or LF in message content is not allowed; lines must end with CRLF");
    public static readonly SmtpReply NoStorage = new(452, "4.3.1", "Insufficient system storage");
}

// The replies that carry the server's host name.
internal sealed class ServerReplies(SmtpServerOptions options)
{
    public SmtpReply Banner { get; } = new(220, null, $"{options.HostName} {options.Greeting}");
    public SmtpReply Helo { get; } = new(250, null, options.HostName);
    public SmtpReply Closing { get; } = new(221, "2.0.0", $"{options.HostName} closing connection");
    public SmtpReply ShuttingDown { get; } = new(421, "4.3.2", $"{options.HostName} Service shutting down, try again later");
    public SmtpReply ConnectFailed { get; } = new(421, "4.3.0", $"{options.HostName} Local error, try again later");
    public SmtpReply TooManyErrors { get; } = new(421, "4.7.0", $"{options.HostName} Too many errors, closing connection");
    public SmtpReply CommandTimeout { get; } = new(421, "4.4.2", $"{options.HostName} Timeout waiting for command, closing connection");
    public SmtpReply DataTimeout { get; } = new(421, "4.4.2", $"{options.HostName} Timeout waiting for message data, closing connection");
    public string SizeExtension { get; } = $"SIZE {options.MaxMessageSize}";
}

// The EHLO reply's extension lines (everything after the greeting line) with their wire form and
// the keywords they advertise; kept on the server's options while sessions keep offering the same.
internal sealed class EhloBlock
{
    public EhloBlock(List<string> lines)
    {
        Lines = lines.GetRange(1, lines.Count - 1).ToArray();
        var wire = new System.Text.StringBuilder();
        for (int i = 0; i < Lines.Length; i++)
            wire.Append(i == Lines.Length - 1 ? "250 " : "250-").Append(Lines[i]).Append("\r\n");
        Wire = System.Text.Encoding.UTF8.GetBytes(wire.ToString());
        var keywords = new string[Lines.Length];
        for (int i = 0; i < Lines.Length; i++)
        {
            int space = Lines[i].IndexOf(' ');
            keywords[i] = space < 0 ? Lines[i] : Lines[i][..space];
        }
        Advertised = System.Collections.Frozen.FrozenSet.ToFrozenSet(keywords, StringComparer.OrdinalIgnoreCase);
    }

    public string[] Lines { get; }
    public byte[] Wire { get; }
    public IReadOnlySet<string> Advertised { get; }

    // The same lines as greeting line + these (lines[0] is the greeting).
    public bool Matches(List<string> lines)
    {
        if (lines.Count != Lines.Length + 1) return false;
        for (int i = 0; i < Lines.Length; i++)
            if (!string.Equals(lines[i + 1], Lines[i], StringComparison.Ordinal)) return false;
        return true;
    }
}
