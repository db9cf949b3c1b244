using System.Text;

namespace Portcullis.NativeScan.Tests;

// RFC 5322 / MIME messages built by the tests, with CRLF line ends as they arrive over SMTP.
public static class Messages
{
    public static string WithAttachment(byte[] attachment, string fileName) =>
        Join(
            "From: sender@example.org",
            "To: rcpt@example.net",
            "Subject: invoice",
            "Message-ID: <attachment@example.org>",
            "MIME-Version: 1.0",
            "Content-Type: multipart/mixed; boundary=\"outer-boundary\"",
            "",
            "This is a multi-part message in MIME format.",
            "--outer-boundary",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            "Please find the invoice attached.",
            "--outer-boundary",
            $"Content-Type: application/octet-stream; name=\"{fileName}\"",
            "Content-Transfer-Encoding: base64",
            $"Content-Disposition: attachment; filename=\"{fileName}\"",
            "",
            Base64Lines(attachment),
            "--outer-boundary--",
            "");

    // The attachment sits in a message/rfc822 part: a forwarded message inside the message.
    public static string WithForwardedMessage(string inner) =>
        Join(
            "From: forwarder@example.org",
            "To: rcpt@example.net",
            "Subject: Fwd: invoice",
            "MIME-Version: 1.0",
            "Content-Type: multipart/mixed; boundary=\"forward-boundary\"",
            "",
            "--forward-boundary",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            "See the forwarded message.",
            "--forward-boundary",
            "Content-Type: message/rfc822",
            "Content-Disposition: attachment; filename=\"forwarded.eml\"",
            "",
            inner.TrimEnd('\r', '\n'),
            "--forward-boundary--",
            "");

    public static string Plain(string body) =>
        Join("From: sender@example.org", "To: rcpt@example.net", "Subject: hello", "", body, "");

    public static byte[] Bytes(string message) => Encoding.ASCII.GetBytes(message);

    private static string Base64Lines(byte[] content)
    {
        var text = Convert.ToBase64String(content);
        var lines = new List<string>();
        for (var i = 0; i < text.Length; i += 76)
        {
            lines.Add(text.Substring(i, Math.Min(76, text.Length - i)));
        }

        return string.Join("\r\n", lines);
    }

    private static string Join(params string[] lines) => string.Join("\r\n", lines);
}
