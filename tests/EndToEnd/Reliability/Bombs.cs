using System.IO.Compression;
using System.Text;
using Portcullis.EndToEnd.Harness;

namespace Portcullis.EndToEnd.Reliability;

// Hostile content, generated small: archive bombs, deep nesting, MIME with thousands of parts.
// Each is built once per test run (they take a moment of CPU) and shared.
public static class Bombs
{
    public const long GiB = 1L << 30;

    // One entry of 1 GiB of zeros, deflated to about 1 MiB.
    private static readonly Lazy<byte[]> GigabyteOfZerosZip = new(() => Zip([("zeros.bin", null, GiB)]));

    // Ten copies of the 1 GiB zip inside one zip (42.zip style): 10 GiB once fully unpacked.
    private static readonly Lazy<byte[]> TenGigabyteZip = new(() =>
        Zip([.. Enumerable.Range(0, 10).Select(i => ($"layer{i}.zip", GigabyteOfZerosZip.Value, 0L))]));

    public static byte[] ZerosZip1G => GigabyteOfZerosZip.Value;

    public static byte[] ZerosZip10G => TenGigabyteZip.Value;

    // `depth` zips, each holding the next; the innermost holds `payload` as payload.txt.
    public static byte[] NestedZip(int depth, byte[] payload)
    {
        var current = Zip([("payload.txt", payload, 0L)]);
        for (var level = 2; level <= depth; level++)
        {
            current = Zip([($"level{level}.zip", current, 0L)]);
        }

        return current;
    }

    // A MIME message with one base64 attachment.
    public static byte[] WithAttachment(string id, string fileName, byte[] attachment)
    {
        const string boundary = "=_portcullis_bomb";
        var text = new StringBuilder()
            .Append(Headers(id, $"multipart/mixed; boundary=\"{boundary}\""))
            .Append($"--{boundary}\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n")
            .Append($"--{boundary}\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n")
            .Append($"Content-Disposition: attachment; filename=\"{fileName}\"\r\n\r\n");
        var base64 = Convert.ToBase64String(attachment);
        for (var i = 0; i < base64.Length; i += 76)
        {
            text.Append(base64, i, Math.Min(76, base64.Length - i)).Append("\r\n");
        }

        text.Append($"--{boundary}--\r\n");
        return SmtpBytes.Ascii(text.ToString());
    }

    // A multipart/mixed message of `parts` small text parts; part number `eicarAt` (1-based, 0: none)
    // carries the EICAR test string.
    public static byte[] ManyParts(string id, int parts, int eicarAt = 0)
    {
        const string boundary = "=_portcullis_parts";
        var text = new StringBuilder(Headers(id, $"multipart/mixed; boundary=\"{boundary}\""));
        for (var i = 1; i <= parts; i++)
        {
            text.Append($"--{boundary}\r\nContent-Type: text/plain\r\n\r\n")
                .Append(i == eicarAt ? TestSignatures.Eicar : $"part {i}").Append("\r\n");
        }

        text.Append($"--{boundary}--\r\n");
        return SmtpBytes.Ascii(text.ToString());
    }

    public static string Headers(string id, string contentType) =>
        $"From: <{TestMessages.Sender}>\r\nTo: <{TestMessages.Recipient}>\r\nSubject: {id}\r\n" +
        $"Message-ID: <{id}@client.test>\r\nDate: Mon, 01 Jan 2024 12:00:00 +0000\r\n" +
        $"MIME-Version: 1.0\r\nContent-Type: {contentType}\r\n\r\n";

    // Entries of given bytes, or (bytes null) of `zeros` zero bytes written in 1 MiB pieces.
    private static byte[] Zip((string Name, byte[]? Content, long Zeros)[] entries)
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        {
            var zeros = new byte[1 << 20];
            foreach (var (name, content, count) in entries)
            {
                using var stream = zip.CreateEntry(name, CompressionLevel.SmallestSize).Open();
                if (content is not null)
                {
                    stream.Write(content);
                    continue;
                }

                for (long written = 0; written < count; written += zeros.Length)
                {
                    stream.Write(zeros, 0, (int)Math.Min(zeros.Length, count - written));
                }
            }
        }

        return buffer.ToArray();
    }
}
