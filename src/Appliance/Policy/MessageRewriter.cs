using System.Text;
using MimeKit;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Notifications;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Policy;

// The two changes the gateway makes to a message it delivers despite a detection. Both splice the
// original: the bytes they do not change are the client's own (SplicedContent).
//  - Strip: each removed leaf part (headers and content) becomes a text/plain part with the text
//    of attachment.txt; multipart boundaries, preambles and every other part stay as they were.
//  - Tag: the subject prefix goes in front of the first Subject field's value (or, without one,
//    the caller adds a Subject field to the header block it prepends).
public static class MessageRewriter
{
    public static SplicedContent Strip(IMessageContent original, IEnumerable<(MessageStructure.Leaf Leaf, string Name)> removed,
        MessageTemplate attachmentText, Interception facts)
    {
        var replacements = removed
            .GroupBy(r => r.Leaf.Begin)
            .Select(g => g.First())
            .OrderBy(r => r.Leaf.Begin)
            .Select(r => (r.Leaf.Begin, r.Leaf.End, Replacement(r.Leaf, r.Name, attachmentText, facts)));
        return SplicedContent.Replace(original, replacements.ToList());
    }

    private static byte[] Replacement(MessageStructure.Leaf leaf, string name, MessageTemplate template, Interception facts)
    {
        var values = (facts with { Virus = name }).Values(leaf.FileName ?? "");
        var part = new TextPart("plain")
        {
            Text = template.RenderBody(values),
            ContentTransferEncoding = ContentEncoding.QuotedPrintable,
        };
        part.ContentType.Charset = "utf-8";
        if (leaf.FileName is not null)
        {
            part.ContentDisposition = new ContentDisposition(ContentDisposition.Attachment) { FileName = leaf.FileName + ".txt" };
        }

        part.Headers.Add("X-Portcullis-Stripped", name);
        using var bytes = new MemoryStream();
        part.WriteTo(NotificationBuilder.Format, bytes);

        // The original range ends before the CRLF that precedes the next boundary; so must this.
        var result = bytes.ToArray();
        var length = result.Length;
        while (length >= 2 && result[length - 2] == '\r' && result[length - 1] == '\n') length -= 2;
        return result[..length];
    }

    // Null when the message has no Subject field in its header block.
    public static SplicedContent? PrefixSubject(IMessageContent original, string prefix)
    {
        var at = FindSubjectValue(original);
        if (at < 0) return null;
        return new SplicedContent(original)
            .AppendSource(0, at)
            .AppendBytes(Encoding.UTF8.GetBytes(prefix))
            .AppendSource(at, original.Length - at);
    }

    // The offset where the first Subject field's value begins (after "Subject:" and white space), or -1.
    internal static long FindSubjectValue(IMessageContent message)
    {
        const int Window = 256 * 1024; // a header block larger than this is not looked into
        var head = new byte[(int)Math.Min(Window, message.Length)];
        var length = 0;
        while (length < head.Length)
        {
            var n = message.Read(length, head.AsSpan(length));
            if (n <= 0) break;
            length += n;
        }

        var span = head.AsSpan(0, length);
        var line = 0;
        while (line < span.Length)
        {
            var end = span[line..].IndexOf((byte)'\n');
            var lineEnd = end < 0 ? span.Length : line + end;
            var text = span[line..lineEnd];
            if (text.IsEmpty || text.SequenceEqual("\r"u8)) return -1; // end of the header block
            if (text.Length >= 8 && Ascii.EqualsIgnoreCase(text[..8], "Subject:"u8))
            {
                var value = line + 8;
                while (value < lineEnd && span[value] is (byte)' ' or (byte)'\t') value++;
                return value;
            }

            if (end < 0) return -1;
            line = lineEnd + 1;
        }

        return -1;
    }
}
