// Delivery status notifications for mail the queue could not deliver (RFC 3464, RFC 6522,
// RFC 3461 §6; RFC 6533 for SMTPUTF8 addresses). Build() returns the whole DSN message, or null when
// none is due. The queue sends it from the null sender (RFC 5321 §4.5.5) to report.Sender.
//
// Contract:
// - multipart/report; report-type=delivery-status: a text/plain part for people, a
//   message/delivery-status part (message/global-delivery-status when an address is not ASCII), and
//   the original: message/rfc822 with RET=FULL, text/rfc822-headers with RET=HDRS. RET absent is
//   decided as Postfix does: the full message in a failure report, headers only in a delay report.
//   An original over MaxReturnedBytes is returned as headers only, whatever RET says, and the text
//   part says so (Postfix's bounce_size_limit does the same); so is a header block past that size.
// - NOTIFY per recipient (RFC 3461 §4.1): NEVER → never; FAILURE → failed; DELAY → delayed.
//   NOTIFY absent is FAILURE,DELAY (§4.1 leaves DELAY to the MTA; delay reports go out only when
//   [queue] delay_warning is set, so an admin who turned them on gets them).
// - Never for the null sender, nor for a sender that is not a mail address, nor for MAILER-DAEMON or postmaster@<reporting host> (the senders of
//   the gateway's own reports), nor for a message that is itself a report or auto-submitted
//   (RFC 3834 Auto-Submitted other than "no"). Precedence: list does not stop it: list software
//   counts on bounces.
using System.Globalization;
using System.Text;
using MimeKit;
using MimeKit.Utils;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Policy;

namespace Portcullis.Appliance.Queue;

internal enum DsnKind { Failed, Delayed }

// Address = bare mailbox; Notify = raw NOTIFY value ("FAILURE,DELAY"); OriginalRecipient = raw ORCPT
// value as the client gave it ("rfc822;a+2Bb@x", xtext).
internal sealed record DsnRecipient(string Address, string? OriginalRecipient, string? Notify,
    string Status, string? DiagnosticCode, string? RemoteMta, DateTimeOffset? LastAttempt);

// RetryUntil: when the queue gives up (Will-Retry-Until in a delay report); null leaves the field out.
internal sealed record DsnReport(DsnKind Kind, string ReportingMta, string Sender, string? EnvId,
    string? Ret, DateTimeOffset Arrival, IReadOnlyList<DsnRecipient> Recipients, string QueueId,
    DateTimeOffset? RetryUntil = null);

internal static class DeliveryStatusNotification
{
    // The most of the original a report carries; past it, headers only.
    public const int MaxReturnedBytes = 100 * 1024;

    private static readonly FormatOptions Format = CreateFormat(international: false);
    private static readonly FormatOptions InternationalFormat = CreateFormat(international: true);

    // null when no DSN is due (null sender, NOTIFY excludes it for every recipient, loop guard).
    public static byte[]? Build(DsnReport report, Stream original)
    {
        if (IsLoopRisk(report.Sender, report.ReportingMta)) return null;
        var recipients = report.Recipients.Where(r => Wants(r.Notify, report.Kind)).ToList();
        if (recipients.Count == 0) return null;

        var copy = OriginalCopy.Read(original, report.Kind, report.Ret);
        if (copy.AutoSubmitted) return null;

        var international = !IsAscii(report.Sender) || recipients.Any(r => !IsAscii(r.Address) || !IsAscii(r.OriginalRecipient ?? ""))
            || copy.HasEightBitHeaders;
        var format = international ? InternationalFormat : Format;

        // A sender MimeKit cannot write as an address could not be sent to either.
        if (!MailboxAddress.TryParse(ParserOptions.Default, "<" + report.Sender + ">", out var to) || report.Sender.Any(char.IsControl)) return null;
        var message = new MimeMessage();
        message.From.Add(new MailboxAddress("Mail Delivery System", "MAILER-DAEMON@" + report.ReportingMta));
        message.To.Add(to);
        message.Subject = report.Kind == DsnKind.Failed ? "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)";
        message.Date = DateTimeOffset.UtcNow;
        message.MessageId = MimeUtils.GenerateMessageId(report.ReportingMta);
        if (copy.MessageId is { Length: > 0 } originalId)
        {
            message.InReplyTo = originalId;
            message.References.Add(originalId);
        }
        // RFC 3834 §5: a report is a response to a message.
        message.Headers.Add("Auto-Submitted", "auto-replied");

        var body = new MultipartReport("delivery-status")
        {
            HumanReadableText(report, recipients, copy),
            StatusPart(report, recipients, format, international),
        };
        if (copy.Part(international) is { } returned) body.Add(returned);
        message.Body = body;

        using var bytes = new MemoryStream();
        message.WriteTo(format, bytes);
        return bytes.ToArray();
    }

    // RFC 3461 §4.1; an unreadable NOTIFY is taken as absent rather than lose the report.
    internal static bool Wants(string? notify, DsnKind kind)
    {
        if (string.IsNullOrWhiteSpace(notify)) return true;
        var values = notify.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (values.Any(v => v.Equals("NEVER", StringComparison.OrdinalIgnoreCase))) return false;
        var wanted = kind == DsnKind.Failed ? "FAILURE" : "DELAY";
        if (values.Any(v => v.Equals(wanted, StringComparison.OrdinalIgnoreCase))) return true;
        return !values.Any(v => v.Equals("SUCCESS", StringComparison.OrdinalIgnoreCase)
            || v.Equals("FAILURE", StringComparison.OrdinalIgnoreCase) || v.Equals("DELAY", StringComparison.OrdinalIgnoreCase));
    }

    private static bool IsLoopRisk(string sender, string reportingMta)
    {
        if (sender.Length == 0) return true;
        var at = sender.LastIndexOf('@');
        var local = at < 0 ? sender : sender[..at];
        if (local.Equals("MAILER-DAEMON", StringComparison.OrdinalIgnoreCase)) return true;
        return local.Equals("postmaster", StringComparison.OrdinalIgnoreCase)
            && (at < 0 || sender[(at + 1)..].Equals(reportingMta, StringComparison.OrdinalIgnoreCase));
    }

    private static TextPart HumanReadableText(DsnReport report, List<DsnRecipient> recipients, OriginalCopy copy)
    {
        var text = new StringBuilder();
        text.Append("This is the mail system at host ").Append(report.ReportingMta).Append(".\r\n\r\n");
        if (report.Kind == DsnKind.Failed)
        {
            text.Append("Your message could not be delivered to one or more recipients. It is attached below.\r\n")
                .Append("For further assistance, please send mail to postmaster.\r\n");
        }
        else
        {
            text.Append("Your message could not be delivered yet. It is still in the queue and delivery will be retried");
            if (report.RetryUntil is { } until) text.Append(" until ").Append(MessageDate.Rfc5322(until));
            text.Append(".\r\nYou do not need to send it again.\r\n");
        }

        text.Append("\r\nQueue ID: ").Append(report.QueueId).Append(", received ").Append(MessageDate.Rfc5322(report.Arrival)).Append(".\r\n\r\n");
        foreach (var recipient in recipients)
        {
            text.Append('<').Append(recipient.Address).Append(">: ");
            if (recipient.RemoteMta is { Length: > 0 } host) text.Append("host ").Append(OneLine(host)).Append(" said: ");
            text.Append(ServerReply(recipient) is { Length: > 0 } reply ? OneLine(reply) : "status " + StatusOf(recipient, report.Kind)).Append("\r\n");
        }

        if (copy.Note is { } note) text.Append("\r\n").Append(note).Append("\r\n");
        var part = new TextPart("plain") { Text = text.ToString(), ContentTransferEncoding = ContentEncoding.QuotedPrintable };
        part.ContentType.Charset = "utf-8";
        part.ContentDescription = "Notification";
        return part;
    }

    private static MessageDeliveryStatus StatusPart(DsnReport report, List<DsnRecipient> recipients, FormatOptions format, bool international)
    {
        var status = new MessageDeliveryStatus { ContentDescription = report.Kind == DsnKind.Failed ? "Delivery report" : "Delay report" };
        if (international) status.ContentType.MediaSubtype = "global-delivery-status";

        var groups = new List<HeaderList>();
        var perMessage = new HeaderList();
        Add(perMessage, format, "Reporting-MTA", "dns; " + report.ReportingMta);
        Add(perMessage, format, "X-Portcullis-Queue-ID", report.QueueId);
        if (report.EnvId is { Length: > 0 } envId) Add(perMessage, format, "Original-Envelope-Id", Printable(DecodeXText(envId), international));
        Add(perMessage, format, "Arrival-Date", MessageDate.Rfc5322(report.Arrival));
        groups.Add(perMessage);

        foreach (var recipient in recipients)
        {
            var fields = new HeaderList();
            if (OriginalRecipient(recipient.OriginalRecipient, international) is { } orcpt) Add(fields, format, "Original-Recipient", orcpt);
            Add(fields, format, "Final-Recipient", (IsAscii(recipient.Address) ? "rfc822; " : "utf-8; ") + recipient.Address);
            Add(fields, format, "Action", report.Kind == DsnKind.Failed ? "failed" : "delayed");
            Add(fields, format, "Status", StatusOf(recipient, report.Kind));
            if (recipient.RemoteMta is { Length: > 0 } host) Add(fields, format, "Remote-MTA", "dns; " + Printable(host, international));
            if (ServerReply(recipient) is { Length: > 0 } reply) Add(fields, format, "Diagnostic-Code", "smtp; " + Printable(reply, international));
            if (recipient.LastAttempt is { } last) Add(fields, format, "Last-Attempt-Date", MessageDate.Rfc5322(last));
            if (report.Kind == DsnKind.Delayed && report.RetryUntil is { } until) Add(fields, format, "Will-Retry-Until", MessageDate.Rfc5322(until));
            groups.Add(fields);
        }

        // HeaderList.WriteTo ends each group with a blank line, which separates them (RFC 3464 §2.1);
        // the last one is dropped, or MimeKit's parser reads it back as an empty recipient.
        var content = new MemoryStream();
        foreach (var group in groups) group.WriteTo(format, content);
        content.SetLength(content.Length - 2);
        content.Position = 0;
        status.Content = new MimeContent(content);
        if (international) status.ContentTransferEncoding = ContentEncoding.EightBit;
        return status;
    }

    // The value is formatted once here, so a non-ASCII address stays UTF-8 (RFC 6533) instead of
    // becoming an RFC 2047 encoded-word, which no DSN field allows.
    private static void Add(HeaderList fields, FormatOptions format, string name, string value)
    {
        var header = new Header(name, "");
        header.SetValue(format, Encoding.UTF8, value);
        fields.Add(header);
    }

    // The server's reply; a DiagnosticCode already typed "smtp;" loses the type (it is added once).
    private static string? ServerReply(DsnRecipient recipient)
    {
        var code = recipient.DiagnosticCode?.Trim();
        return code is not null && code.StartsWith("smtp;", StringComparison.OrdinalIgnoreCase) ? code[5..].TrimStart() : code;
    }

    // RFC 3464 §2.3.4: class 5 for failed (4 is allowed too: a lifetime that ran out on a
    // temporary error), class 4 for delayed. Anything else becomes the generic code.
    private static string StatusOf(DsnRecipient recipient, DsnKind kind)
    {
        var parts = recipient.Status.Trim().Split('.');
        var valid = parts.Length == 3 && parts.All(p => p.Length is >= 1 and <= 3 && p.All(char.IsAsciiDigit))
            && (kind == DsnKind.Delayed ? parts[0] == "4" : parts[0] is "4" or "5");
        return valid ? recipient.Status.Trim() : kind == DsnKind.Failed ? "5.0.0" : "4.0.0";
    }

    // RFC 3464 §2.3.1: the ORCPT address type and the address, decoded from xtext (RFC 3461 §4.2);
    // for type utf-8 also the \x{HEX} escapes (RFC 6533 §3). null when the value has no type.
    private static string? OriginalRecipient(string? orcpt, bool international)
    {
        if (string.IsNullOrWhiteSpace(orcpt)) return null;
        var semicolon = orcpt.IndexOf(';');
        if (semicolon <= 0) return null;
        var type = orcpt[..semicolon].Trim();
        var address = DecodeXText(orcpt[(semicolon + 1)..].Trim());
        if (type.Equals("utf-8", StringComparison.OrdinalIgnoreCase)) address = DecodeUnicodeEscapes(address);
        return type + "; " + Printable(address, international);
    }

    // xtext: "+XX" is the octet XX; a malformed escape stays as it is.
    internal static string DecodeXText(string xtext)
    {
        if (!xtext.Contains('+')) return xtext;
        var octets = new List<byte>(xtext.Length);
        for (int i = 0; i < xtext.Length; i++)
        {
            if (xtext[i] == '+' && i + 2 < xtext.Length && byte.TryParse(xtext.AsSpan(i + 1, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var octet))
            {
                octets.Add(octet);
                i += 2;
                continue;
            }
            octets.AddRange(Encoding.UTF8.GetBytes(xtext[i].ToString()));
        }
        return Encoding.UTF8.GetString(octets.ToArray());
    }

    private static string DecodeUnicodeEscapes(string value)
    {
        var result = new StringBuilder(value.Length);
        for (int i = 0; i < value.Length; i++)
        {
            var close = value.IndexOf('}', i);
            if (value.AsSpan(i).StartsWith("\\x{") && close > i + 3
                && int.TryParse(value.AsSpan(i + 3, close - i - 3), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var scalar)
                && Rune.IsValid(scalar))
            {
                result.Append(new Rune(scalar).ToString());
                i = close;
                continue;
            }
            result.Append(value[i]);
        }
        return result.ToString();
    }

    // One line of printable text: a multi-line reply joined with spaces, control characters dropped,
    // and non-ASCII as '?' unless the report is message/global-delivery-status.
    private static string Printable(string value, bool international)
    {
        var result = new StringBuilder(value.Length);
        foreach (var c in OneLine(value))
        {
            if (char.IsControl(c)) continue;
            result.Append(c < 128 || international ? c : '?');
        }
        return result.ToString();
    }

    private static string OneLine(string value) =>
        string.Join(' ', value.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    private static bool IsAscii(string value) => Ascii.IsValid(value);

    private static FormatOptions CreateFormat(bool international)
    {
        var format = FormatOptions.Default.Clone();
        format.NewLineFormat = NewLineFormat.Dos;
        format.International = international;
        return format;
    }

    // What is returned of the original: read once, at most MaxReturnedBytes + 1 bytes, so the size
    // of the original never matters.
    private sealed class OriginalCopy
    {
        private byte[] _bytes = [];
        private bool _headersOnly;

        public string? Note { get; private set; }
        public string? MessageId { get; private set; }
        public bool AutoSubmitted { get; private set; }
        public bool HasEightBitHeaders { get; private set; }

        public static OriginalCopy Read(Stream original, DsnKind kind, string? ret)
        {
            var buffer = new byte[MaxReturnedBytes + 1];
            int length = 0;
            while (length < buffer.Length)
            {
                var n = original.Read(buffer, length, buffer.Length - length);
                if (n == 0) break;
                length += n;
            }

            var complete = length <= MaxReturnedBytes;
            var copy = new OriginalCopy();
            var wantFull = ret is null ? kind == DsnKind.Failed : ret.Equals("FULL", StringComparison.OrdinalIgnoreCase);
            var (headerEnd, headerComplete) = HeaderBlockEnd(buffer.AsSpan(0, length), complete);
            copy._headersOnly = !(wantFull && complete);
            copy._bytes = buffer.AsSpan(0, copy._headersOnly ? headerEnd : length).ToArray();
            var limit = MaxReturnedBytes / 1024;
            if (!headerComplete)
            {
                copy.Note = headerEnd > 0
                    ? $"The header of the original message is larger than {limit} KB: only its first fields are returned."
                    : $"The header of the original message is larger than {limit} KB: it is not returned.";
            }
            else if (wantFull && !complete)
            {
                copy.Note = $"The original message is larger than {limit} KB: only its header is returned.";
            }

            copy.ReadHeaderFacts(buffer.AsSpan(0, headerEnd));
            return copy;
        }

        // The length of the header block with its ending blank line, and whether it ended within the
        // bytes read; when it did not, the length up to the last whole field.
        private static (int Length, bool Complete) HeaderBlockEnd(ReadOnlySpan<byte> bytes, bool complete)
        {
            var blank = bytes.IndexOf("\r\n\r\n"u8);
            if (blank >= 0) return (blank + 4, true);
            var bareBlank = bytes.IndexOf("\n\n"u8);
            if (bareBlank >= 0) return (bareBlank + 2, true);
            if (complete) return (bytes.Length, true);
            for (int i = bytes.Length - 2; i >= 0; i--)
            {
                if (bytes[i] == '\n' && bytes[i + 1] is not (byte)' ' and not (byte)'\t') return (i + 1, false);
            }
            return (0, false);
        }

        private void ReadHeaderFacts(ReadOnlySpan<byte> header)
        {
            HasEightBitHeaders = !Ascii.IsValid(header);
            try
            {
                using var stream = new MemoryStream(header.ToArray(), writable: false);
                var fields = HeaderList.Load(stream);
                MessageId = fields[HeaderId.MessageId]?.Trim();
                var contentType = fields[HeaderId.ContentType];
                var isReport = contentType is not null && ContentType.TryParse(contentType, out var type)
                    && type.IsMimeType("multipart", "report");
                // Precedence is left out on purpose: mailing lists count on bounces.
                AutoSubmitted = isReport || MessageStructure.IsAutoGenerated(fields["Auto-Submitted"], precedence: null);
            }
            catch (FormatException)
            {
                // An unreadable header still gets its report; it just has no facts to offer.
            }
        }

        public MimeEntity? Part(bool international)
        {
            if (_bytes.Length == 0) return null;
            try
            {
                if (_headersOnly)
                {
                    // RFC 6533 §6.3: message/global-headers for a header block with UTF-8 in it.
                    var headers = international ? new MessagePart("global-headers") : new TextRfc822Headers();
                    headers.Message = MimeMessage.Load(new MemoryStream(_bytes, writable: false));
                    return headers;
                }

                var part = new MessagePart(international ? "global" : "rfc822")
                {
                    Message = MimeMessage.Load(new MemoryStream(_bytes, writable: false)),
                };
                // RFC 6152: an 8-bit original is declared so; the DSN then needs 8BITMIME to travel.
                if (!Ascii.IsValid(_bytes)) part.Headers.Add(HeaderId.ContentTransferEncoding, "8bit");
                return part;
            }
            catch (FormatException)
            {
                return null;
            }
        }
    }
}
