using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using Portcullis.EndToEnd.Harness;

namespace Portcullis.EndToEnd.Tests;

// The attachment-policy bypasses of issue 9, each carrying a harmless evil.exe (a PE header, no
// signature matches it) in a container or MIME shape the old check missed.
public static class BypassMessages
{
    public static readonly byte[] HarmlessPe = [.. "MZ"u8, .. new byte[62], .. Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("harmless", 32)))];

    private static string Text => PolicyMessages.TextPart("See attached.\r\n");

    private static byte[] WithAttachment(string subject, string fileName, byte[] content, string type = "application/octet-stream") =>
        PolicyMessages.Multipart(subject, "", Text, PolicyMessages.Attachment(fileName, content, type));

    private static string Base64(byte[] content) => Convert.ToBase64String(content, Base64FormattingOptions.InsertLineBreaks) + "\r\n";

    public static byte[] EvilZip() => PolicyMessages.Zip(("evil.exe", HarmlessPe));

    public static IEnumerable<(string Case, byte[] Message)> All()
    {
        var plain = SmtpBytes.Text(WithAttachment("inner", "evil.exe", HarmlessPe));

        yield return ("leading header continuation", SmtpBytes.Ascii(" folded\r\n" + plain));

        var nested = EvilZip();
        for (var i = 0; i < 4; i++)
        {
            nested = PolicyMessages.Zip(($"level{i}.zip", nested));
        }

        yield return ("zip nested 4 deep", WithAttachment("nested", "deep.zip", nested, "application/zip"));

        // 65 MB of zeros: more than the old reader's whole 64 MB inflate budget.
        yield return ("zip spending the inflate budget first", PolicyMessages.Multipart("budget", "", Text,
            PolicyMessages.Attachment("zeros.zip", PolicyMessages.Zip(("zeros.bin", new byte[65 << 20])), "application/zip"),
            PolicyMessages.Attachment("real.zip", EvilZip(), "application/zip")));

        yield return ("zip behind an SFX stub", WithAttachment("sfx", "setup.bin", [.. HarmlessPe, .. new byte[512], .. EvilZip()]));
        yield return ("zip named .dat", WithAttachment("dat", "archive.dat", EvilZip()));
        yield return ("zip named .zipx", WithAttachment("zipx", "archive.zipx", EvilZip(), "application/zip"));

        var tar = Tar(("evil.exe", HarmlessPe));
        yield return ("tar", WithAttachment("tar", "files.tar", tar, "application/x-tar"));
        yield return (".tgz", WithAttachment("tgz", "files.tgz", Gzip(tar, null)));
        yield return (".gz", WithAttachment("gz", "evil.exe.gz", Gzip(HarmlessPe, null)));
        yield return (".gz with the name only in its header", WithAttachment("gzname", "data.gz", Gzip(HarmlessPe, "evil.exe")));

        yield return ("message/rfc822 in base64", PolicyMessages.Multipart("rfc822 b64", "", Text,
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + Base64(SmtpBytes.Ascii(plain))));
        yield return ("message/rfc822 in quoted-printable", PolicyMessages.Multipart("rfc822 qp", "", Text,
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + QuotedPrintable(plain)));

        yield return ("uuencode in a text body", PolicyMessages.Plain("uu", "See attached.\r\n" + Uuencode("evil.exe", HarmlessPe)));

        yield return ("two Content-Disposition fields", PolicyMessages.Multipart("2 disp", "", Text,
            "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\n" +
            "Content-Disposition: attachment; filename=\"evil.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + Base64(HarmlessPe)));
        yield return ("two filename parameters", PolicyMessages.Multipart("2 filename", "", Text,
            "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"notes.txt\"; filename=\"evil.exe\"\r\n" +
            "Content-Transfer-Encoding: base64\r\n\r\n" + Base64(HarmlessPe)));
        yield return ("two top-level Content-Type fields", SmtpBytes.Ascii(PolicyMessages.Headers("2 types") +
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
            "--b\r\n" + Text + "--b\r\n" + PolicyMessages.Attachment("evil.exe", HarmlessPe) + "--b--\r\n"));
        yield return ("two boundary parameters", SmtpBytes.Ascii(PolicyMessages.Headers("2 boundaries") +
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"a\"; boundary=\"b\"\r\n\r\n" +
            "--a\r\n" + Text + "--b\r\n" + PolicyMessages.Attachment("evil.exe", HarmlessPe) + "--b--\r\n--a--\r\n"));

        yield return ("7z", WithAttachment("7z", "files.7z", SevenZip(("evil.exe", HarmlessPe)), "application/x-7z-compressed"));
    }

    // 20 multiparts nested in each other around a harmless part.
    public static byte[] NestedMultiparts(int depth)
    {
        var body = PolicyMessages.TextPart("deep\r\n");
        for (var i = 0; i < depth; i++)
        {
            body = $"Content-Type: multipart/mixed; boundary=\"n{i}\"\r\n\r\n--n{i}\r\n{body}--n{i}--\r\n";
        }

        return SmtpBytes.Ascii(PolicyMessages.Headers("nested multiparts") + "MIME-Version: 1.0\r\n" + body);
    }

    public static byte[] Tar(params (string Name, byte[] Content)[] entries)
    {
        using var stream = new MemoryStream();
        using (var tar = new TarWriter(stream, TarEntryFormat.Ustar, leaveOpen: true))
        {
            foreach (var (name, content) in entries)
            {
                tar.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(content) });
            }
        }

        return stream.ToArray();
    }

    // A gzip stream; headerName: the RFC 1952 FNAME field, which .NET's GZipStream does not write.
    public static byte[] Gzip(byte[] content, string? headerName)
    {
        using var stream = new MemoryStream();
        using (var gzip = new GZipStream(stream, CompressionLevel.Optimal, leaveOpen: true))
        {
            gzip.Write(content);
        }

        var bytes = stream.ToArray();
        if (headerName is null)
        {
            return bytes;
        }

        bytes[3] |= 8;
        return [.. bytes[..10], .. Encoding.Latin1.GetBytes(headerName), 0, .. bytes[10..]];
    }

    // 7z from p7zip-full (build/deps.sh test_pkgs); .NET has no 7z writer.
    public static byte[] SevenZip(params (string Name, byte[] Content)[] entries)
    {
        var folder = Directory.CreateTempSubdirectory("portcullis-7z-").FullName;
        try
        {
            foreach (var (name, content) in entries)
            {
                File.WriteAllBytes(Path.Combine(folder, name), content);
            }

            var archive = Path.Combine(folder, "out.7z");
            var start = new ProcessStartInfo("7z", ["a", "-bd", "-y", archive, .. entries.Select(e => e.Name)])
            {
                WorkingDirectory = folder,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var process = Process.Start(start) ?? throw new InvalidOperationException("7z did not start (install p7zip-full)");
            var output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                throw new InvalidOperationException($"7z failed: {output}");
            }

            return File.ReadAllBytes(archive);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    public static string QuotedPrintable(string text)
    {
        var result = new StringBuilder();
        foreach (var line in text.Split("\r\n"))
        {
            var encoded = new StringBuilder();
            foreach (var c in line)
            {
                encoded.Append(c is '=' or > '~' ? $"={(int)c:X2}" : c.ToString());
            }

            var rest = encoded.ToString();
            while (rest.Length > 75)
            {
                var cut = 75;
                while (rest[cut - 1] == '=' || rest[cut - 2] == '=') cut--; // never split an =XX
                result.Append(rest[..cut]).Append("=\r\n");
                rest = rest[cut..];
            }

            result.Append(rest).Append("\r\n");
        }

        return result.ToString();
    }

    public static string Uuencode(string name, byte[] content)
    {
        static char Char(int value) => value == 0 ? '`' : (char)(value + 32);
        var text = new StringBuilder($"begin 644 {name}\r\n");
        for (var at = 0; at < content.Length; at += 45)
        {
            var chunk = content.AsSpan(at, Math.Min(45, content.Length - at));
            text.Append(Char(chunk.Length));
            for (var i = 0; i < chunk.Length; i += 3)
            {
                int b0 = chunk[i], b1 = i + 1 < chunk.Length ? chunk[i + 1] : 0, b2 = i + 2 < chunk.Length ? chunk[i + 2] : 0;
                text.Append(Char(b0 >> 2)).Append(Char(((b0 & 3) << 4) | (b1 >> 4))).Append(Char(((b1 & 15) << 2) | (b2 >> 6))).Append(Char(b2 & 63));
            }

            text.Append("\r\n");
        }

        return text.Append("`\r\nend\r\n").ToString();
    }
}
