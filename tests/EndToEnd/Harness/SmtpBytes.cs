using System.Text;

namespace Portcullis.EndToEnd.Harness;

// Byte-level helpers for message content on the wire.
public static class SmtpBytes
{
    public static byte[] Ascii(string text) => Encoding.Latin1.GetBytes(text);

    public static string Text(ReadOnlySpan<byte> bytes) => Encoding.Latin1.GetString(bytes);

    // RFC 5321 §4.5.2: a line (after CRLF, or at the very start) that begins with "." gets another ".".
    public static byte[] DotStuff(ReadOnlySpan<byte> content)
    {
        var output = new MemoryStream(content.Length + 64);
        for (var i = 0; i < content.Length; i++)
        {
            if (content[i] == '.' && IsLineStart(content, i))
            {
                output.WriteByte((byte)'.');
            }

            output.WriteByte(content[i]);
        }

        return output.ToArray();
    }

    public static byte[] Unstuff(ReadOnlySpan<byte> stuffed)
    {
        var output = new MemoryStream(stuffed.Length);
        for (var i = 0; i < stuffed.Length; i++)
        {
            if (stuffed[i] == '.' && IsLineStart(stuffed, i))
            {
                continue;
            }

            output.WriteByte(stuffed[i]);
        }

        return output.ToArray();
    }

    // What a client sends after the 354: the stuffed content and the terminating "." line.
    // The content must end with CRLF so that what arrives is byte-identical to it.
    public static byte[] DataPayload(ReadOnlySpan<byte> content)
    {
        if (!content.EndsWith("\r\n"u8))
        {
            throw new ArgumentException("message content must end with CRLF", nameof(content));
        }

        return [.. DotStuff(content), .. ".\r\n"u8];
    }

    // True if the bytes contain a CR not followed by LF or an LF not preceded by CR.
    public static bool HasBareNewline(ReadOnlySpan<byte> bytes)
    {
        for (var i = 0; i < bytes.Length; i++)
        {
            if (bytes[i] == '\r' && (i + 1 == bytes.Length || bytes[i + 1] != '\n'))
            {
                return true;
            }

            if (bytes[i] == '\n' && (i == 0 || bytes[i - 1] != '\r'))
            {
                return true;
            }
        }

        return false;
    }

    private static bool IsLineStart(ReadOnlySpan<byte> bytes, int i) =>
        i == 0 || (i >= 2 && bytes[i - 2] == '\r' && bytes[i - 1] == '\n');
}
