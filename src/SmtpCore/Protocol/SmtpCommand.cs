// SMTP command line parser (RFC 5321 §4.1.1, §4.5.3.1.4). Pure: it reads from a
// SequenceReader and does no I/O. A command line ends at CRLF; a line with no LF within the
// length cap is an error the session answers with 500 and a close. The parser only splits
// the verb from its argument text; argument grammar lives in SmtpPath and the parameter parser.
using System.Buffers;
using System.Text;

namespace Portcullis.SmtpCore.Protocol;

public enum SmtpVerb
{
    Unknown, Helo, Ehlo, Mail, Rcpt, Data, Bdat, Rset, Noop, Quit, Vrfy, Expn, Help, StartTls, Auth,
}

public enum ParseStatus
{
    Incomplete,   // no full line yet and still under the cap: read more
    Complete,     // a command was parsed and consumed
    LineTooLong,  // no LF within the cap: 500 and close
    BareLineFeed, // the line ended with LF alone: consumed, answered 500, session goes on
}

public readonly record struct SmtpCommand(SmtpVerb Verb, string VerbText, string Argument)
{
    public override string ToString() => Argument.Length == 0 ? VerbText : VerbText + " " + Argument;
}

public static class SmtpCommandParser
{
    // Name bytes for matching, and the same name as the string every command of that verb carries.
    private static readonly (byte[] Name, SmtpVerb Verb, string Text)[] Verbs =
    [
        ("HELO"u8.ToArray(), SmtpVerb.Helo, "HELO"), ("EHLO"u8.ToArray(), SmtpVerb.Ehlo, "EHLO"),
        ("MAIL"u8.ToArray(), SmtpVerb.Mail, "MAIL"), ("RCPT"u8.ToArray(), SmtpVerb.Rcpt, "RCPT"),
        ("DATA"u8.ToArray(), SmtpVerb.Data, "DATA"), ("BDAT"u8.ToArray(), SmtpVerb.Bdat, "BDAT"),
        ("RSET"u8.ToArray(), SmtpVerb.Rset, "RSET"), ("NOOP"u8.ToArray(), SmtpVerb.Noop, "NOOP"),
        ("QUIT"u8.ToArray(), SmtpVerb.Quit, "QUIT"), ("VRFY"u8.ToArray(), SmtpVerb.Vrfy, "VRFY"),
        ("EXPN"u8.ToArray(), SmtpVerb.Expn, "EXPN"), ("HELP"u8.ToArray(), SmtpVerb.Help, "HELP"),
        ("STARTTLS"u8.ToArray(), SmtpVerb.StartTls, "STARTTLS"), ("AUTH"u8.ToArray(), SmtpVerb.Auth, "AUTH"),
    ];

    // maxLength counts the whole line including CRLF.
    public static ParseStatus TryParse(ref SequenceReader<byte> reader, int maxLength, out SmtpCommand command)
    {
        command = default;
        if (!reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n', advancePastDelimiter: true))
        {
            // Only the unread part counts against the cap; the caller keeps it for the next read.
            if (reader.Remaining >= maxLength)
            {
                reader.Advance(reader.Remaining);
                return ParseStatus.LineTooLong;
            }
            return ParseStatus.Incomplete;
        }

        if (line.Length + 1 > maxLength)
            return ParseStatus.LineTooLong;

        if (line.Length == 0 || LastByte(line) != (byte)'\r')
            return ParseStatus.BareLineFeed;

        line = line.Slice(0, line.Length - 1);
        Span<byte> stack = stackalloc byte[256];
        ReadOnlySpan<byte> bytes = line.IsSingleSegment ? line.FirstSpan
            : line.Length <= stack.Length ? CopyTo(line, stack) : line.ToArray();

        command = Split(bytes);
        return ParseStatus.Complete;
    }

    private static ReadOnlySpan<byte> CopyTo(in ReadOnlySequence<byte> seq, Span<byte> dest)
    {
        seq.CopyTo(dest);
        return dest[..(int)seq.Length];
    }

    private static byte LastByte(in ReadOnlySequence<byte> seq)
    {
        if (seq.IsSingleSegment) return seq.FirstSpan[^1];
        return seq.Slice(seq.Length - 1).FirstSpan[0];
    }

    internal static SmtpCommand Split(ReadOnlySpan<byte> line)
    {
        int space = line.IndexOf((byte)' ');
        ReadOnlySpan<byte> verb = space < 0 ? line : line[..space];
        ReadOnlySpan<byte> arg = space < 0 ? default : line[(space + 1)..];

        foreach (var (name, kind, text) in Verbs)
        {
            if (Ascii.EqualsIgnoreCase(verb, name)) return new SmtpCommand(kind, text, Decode(arg.TrimEnd((byte)' ')));
        }
        // Verbs are ASCII; anything else is shown escaped in the log, never trusted.
        return new SmtpCommand(SmtpVerb.Unknown, Printable(verb), Decode(arg.TrimEnd((byte)' ')));
    }

    // Arguments may carry UTF-8 (RFC 6531); invalid sequences become U+FFFD and then fail path syntax.
    private static string Decode(ReadOnlySpan<byte> arg) => arg.IsEmpty ? "" : Encoding.UTF8.GetString(arg);

    private static string Printable(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length > 32) bytes = bytes[..32];
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes)
            sb.Append(b is >= 0x21 and < 0x7f ? (char)b : '?');
        return sb.ToString();
    }
}
