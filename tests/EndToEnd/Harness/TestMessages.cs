using System.Text;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;

namespace Portcullis.EndToEnd.Harness;

// Messages the tests send, as raw bytes (for raw sockets) or MimeMessages (for MailKit).
public static class TestMessages
{
    public const string Sender = "alice@client.test";
    public const string Recipient = "bob@dest.test";

    // A plain RFC 5322 message; `body` lines are joined with CRLF and the result ends with CRLF.
    public static byte[] Plain(string subject, params string[] bodyLines) =>
        SmtpBytes.Ascii(Headers(subject) + string.Join("\r\n", bodyLines) + "\r\n");

    public static string Headers(string subject) =>
        $"From: <{Sender}>\r\nTo: <{Recipient}>\r\nSubject: {subject}\r\n" +
        $"Message-ID: <{Guid.NewGuid():N}@client.test>\r\nDate: Mon, 01 Jan 2024 12:00:00 +0000\r\n\r\n";

    public static MimeMessage WithAttachment(string subject, string text, string fileName, byte[] attachment, string mediaType = "application/octet-stream")
    {
        var body = new BodyBuilder { TextBody = text };
        body.Attachments.Add(fileName, attachment, ContentType.Parse(mediaType));
        return Envelope(subject, body.ToMessageBody());
    }

    public static MimeMessage Envelope(string subject, MimeEntity body)
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(Sender));
        message.To.Add(MailboxAddress.Parse(Recipient));
        message.Subject = subject;
        message.Body = body;
        return message;
    }

    // Deterministic bytes that look like nothing in particular.
    public static byte[] Noise(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    // About `size` bytes of ASCII lines (76 characters + CRLF), some beginning with "." so that
    // dot-stuffing is exercised all the way through.
    public static byte[] LargeText(string subject, int size)
    {
        var text = new StringBuilder(size + 1024).Append(Headers(subject));
        var random = new Random(size);
        const string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        var line = new char[76];
        for (var n = 0; text.Length < size; n++)
        {
            for (var i = 0; i < line.Length; i++)
            {
                line[i] = alphabet[random.Next(alphabet.Length)];
            }

            if (n % 997 == 0)
            {
                line[0] = '.';
            }

            text.Append(line).Append("\r\n");
        }

        return SmtpBytes.Ascii(text.ToString());
    }

    // Sends with MailKit and returns the server's reply text to the message.
    public static async Task<string> SendWithMailKitAsync(int port, MimeMessage message)
    {
        using var client = new SmtpClient { LocalDomain = "client.test", Timeout = 60_000 };
        await client.ConnectAsync("127.0.0.1", port, SecureSocketOptions.None);
        try
        {
            return await client.SendAsync(message);
        }
        finally
        {
            if (client.IsConnected)
            {
                await client.DisconnectAsync(quit: true);
            }
        }
    }

    // The bytes MailKit puts on the wire for `message`, captured by a test server that advertises
    // what the gateway advertises (so MailKit prepares the message the same way for both).
    public static async Task<byte[]> WireBytesOfAsync(MimeMessage message)
    {
        await using var capture = TestSmtpServer.Start(DownstreamExtensions.Default | DownstreamExtensions.Chunking);
        await SendWithMailKitAsync(capture.Port, message);
        var received = await capture.Messages.WaitForCountAsync(1, TimeSpan.FromSeconds(10), "the reference copy");
        return received[0].Content;
    }
}
