using System.Text;

namespace Portcullis.EndToEnd.Harness;

// Raw MIME messages for the action, quarantine and notification tests, and the extra signatures
// that give each detection class a test case (libclamav appends .UNOFFICIAL to every one of them).
public static class PolicyMessages
{
    public const string Boundary = "=_portcullis_e2e_";
    public const string PuaText = "PORTCULLIS-E2E-PUA-TEST-STRING-4711";
    public const string HeuristicsText = "PORTCULLIS-E2E-HEURISTICS-TEST-STRING-0815";
    public const string PhishingText = "PORTCULLIS-E2E-PHISHING-TEST-STRING-2342";
    public const string PuaName = "PUA.Test.X";
    public const string HeuristicsName = "Heuristics.Test.X";
    public const string PhishingName = "Email.Phishing.Test.X";

    // Adds class signatures next to the harness's EICAR and clam.exe ones.
    public static void WriteClassSignatures(GatewayIni config)
    {
        Directory.CreateDirectory(config.DatabaseFolder);
        var lines = new[] { (PuaName, PuaText), (HeuristicsName, HeuristicsText), (PhishingName, PhishingText) }
            .Select(s => $"{s.Item1}:0:*:{Convert.ToHexStringLower(Encoding.ASCII.GetBytes(s.Item2))}");
        File.WriteAllText(Path.Combine(config.DatabaseFolder, "classes.ndb"), string.Join("\n", lines) + "\n");
    }

    public static string Headers(string subject, string extra = "") =>
        $"From: <{TestMessages.Sender}>\r\nTo: <{TestMessages.Recipient}>\r\nSubject: {subject}\r\n" +
        $"Message-ID: <{Guid.NewGuid():N}@client.test>\r\nDate: Mon, 01 Jan 2024 12:00:00 +0000\r\n{extra}";

    public static string TextPart(string text) =>
        "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" + text;

    public static string Attachment(string fileName, byte[] content, string type = "application/octet-stream") =>
        $"Content-Type: {type}; name=\"{fileName}\"\r\nContent-Disposition: attachment; filename=\"{fileName}\"\r\n" +
        "Content-Transfer-Encoding: base64\r\n\r\n" + Convert.ToBase64String(content, Base64FormattingOptions.InsertLineBreaks) + "\r\n";

    // A multipart/mixed message; each part is headers, blank line and content (ending in CRLF).
    public static byte[] Multipart(string subject, string extraHeaders, params string[] parts)
    {
        var text = new StringBuilder(Headers(subject, extraHeaders));
        text.Append("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"").Append(Boundary).Append("\"\r\n\r\n");
        text.Append("This is a multi-part message in MIME format.\r\n");
        foreach (var part in parts)
        {
            text.Append("--").Append(Boundary).Append("\r\n").Append(part);
        }

        text.Append("--").Append(Boundary).Append("--\r\n");
        return SmtpBytes.Ascii(text.ToString());
    }

    public static byte[] Plain(string subject, string body, string extraHeaders = "") =>
        SmtpBytes.Ascii(Headers(subject, extraHeaders) + "\r\n" + body + "\r\n");

    public static byte[] Zip(params (string Name, byte[] Content)[] entries)
    {
        using var stream = new MemoryStream();
        using (var zip = new System.IO.Compression.ZipArchive(stream, System.IO.Compression.ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var (name, content) in entries)
            {
                using var entry = zip.CreateEntry(name).Open();
                entry.Write(content);
            }
        }

        return stream.ToArray();
    }

    // A notification the gateway sent: the null sender and Auto-Submitted.
    public static bool IsNotification(ReceivedMessage message) =>
        message.MailCommand.StartsWith("MAIL FROM:<>", StringComparison.OrdinalIgnoreCase)
        && SmtpBytes.Text(message.Content).Contains("Auto-Submitted: auto-generated", StringComparison.OrdinalIgnoreCase);

    // The header block of a delivered message, unfolded: name -> values.
    public static ILookup<string, string> HeaderFields(byte[] content)
    {
        var text = SmtpBytes.Text(content);
        var end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        var block = (end < 0 ? text : text[..end]).Replace("\r\n ", " ").Replace("\r\n\t", " ");
        return block.Split("\r\n").Where(l => l.Contains(':'))
            .ToLookup(l => l[..l.IndexOf(':')], l => l[(l.IndexOf(':') + 1)..].Trim(), StringComparer.OrdinalIgnoreCase);
    }
}
