using System.Text;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Policy;
using Xunit;

namespace Portcullis.Appliance.Tests.Policy;

// The bounded MIME read that fills what libclamav does not report: declared types, header names,
// uuencode names, and Banned.MalformedMime for what clients may read differently.
public sealed class MimeStructureCheckTests
{
    private static readonly BannedAttachments Defaults = BannedAttachments.From(new ScanSection());

    private const string Top = "From: a@example.com\r\nTo: b@example.com\r\nSubject: t\r\nMIME-Version: 1.0\r\n";

    private static string Multipart(string partHeaders, string partBody = "aGVsbG8=\r\n", string topExtra = "") =>
        Top + topExtra + "Content-Type: multipart/mixed; boundary=\"BB\"\r\n\r\npreamble\r\n--BB\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        + "--BB\r\n" + partHeaders + "\r\n" + partBody + "--BB--\r\n";

    private static string? Check(string message, bool strict = true) =>
        MimeStructureCheck.CheckMessage(Encoding.UTF8.GetBytes(message), Defaults, strict);

    [Theory]
    [InlineData("Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n")]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.txt\"; filename*=UTF-8''a.txt\r\n")]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n filename*0=\"re\"; filename*1=\"port.pdf\"\r\n")]
    [InlineData("Content-Type: text/plain\r\nX-Long: " + "x" + "\r\n")]
    public void Ordinary_messages_pass(string partHeaders) => Assert.Null(Check(Multipart(partHeaders)));

    [Fact]
    public void A_plain_message_with_a_very_long_header_line_passes()
    {
        var message = Top + "X-Filler: " + new string('a', 8 << 20) + "\r\n\r\nbody\r\n";
        Assert.Null(Check(message));
    }

    [Theory]
    [InlineData(" folded\r\n" + Top + "\r\nbody\r\n")]
    [InlineData("\r\n" + Top + "\r\nbody\r\n")]
    [InlineData("not a header line\r\n" + Top + "\r\nbody\r\n")]
    [InlineData(Top + "Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nbody\r\n")]
    [InlineData(Top + "Content-Type: multipart/mixed; boundary=a; boundary=b\r\n\r\n--a\r\n\r\nx\r\n--a--\r\n")]
    [InlineData(Top + "Content-Type: multipart/mixed\r\n\r\n--a\r\n\r\nx\r\n--a--\r\n")]
    [InlineData(Top + "Content-Type: multipart/mixed; boundary=a\r\n\r\nno delimiter at all\r\n")]
    [InlineData(Top + "garbage in the header\r\n\r\nbody\r\n")]
    public void Ambiguous_or_unreadable_messages_are_malformed(string message) =>
        Assert.Equal(MimeStructureCheck.Malformed, Check(message));

    [Theory]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.txt\"\r\nContent-Disposition: attachment; filename=\"evil.exe\"\r\n")]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.txt\"; filename=\"evil.exe\"\r\n")]
    [InlineData("Content-Type: application/octet-stream; name=\"a.txt\"; NAME=\"evil.exe\"\r\n")]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit\r\n")]
    [InlineData("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n")]
    public void Ambiguous_parts_are_malformed(string partHeaders) =>
        Assert.Equal(MimeStructureCheck.Malformed, Check(Multipart(partHeaders)));

    [Theory]
    [InlineData("Content-Type: application/octet-stream; name=\"evil.exe\"\r\n", "Banned.Extension.exe")]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=UTF-8''evil%2Eexe\r\n", "Banned.Extension.exe")]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"=?UTF-8?B?ZXZpbC5leGU=?=\"\r\n", "Banned.Extension.exe")]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*0=\"evil\"; filename*1=\".exe\"\r\n", "Banned.Extension.exe")]
    [InlineData("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n", "Banned.DoubleExtension")]
    [InlineData("Content-Type: Application/X-MSDownload; name=\"data.bin\"\r\n", "Banned.ContentType")]
    public void Names_and_declared_types_in_part_headers_are_checked(string partHeaders, string expected) =>
        Assert.Equal(expected, Check(Multipart(partHeaders)));

    [Fact]
    public void An_inline_message_rfc822_is_read_as_a_message()
    {
        var inner = Multipart("Content-Type: application/octet-stream; name=\"tool.scr\"\r\n").Replace("BB", "inner");
        Assert.Equal("Banned.Extension.scr", Check(Multipart("Content-Type: message/rfc822\r\n", inner)));
    }

    [Fact]
    public void A_uuencoded_file_in_a_text_body_is_checked_by_its_begin_line_name()
    {
        var message = Top + "\r\nSee attached.\r\nbegin 644 evil.exe\r\nM35H``\r\n`\r\nend\r\n";
        Assert.Equal("Banned.Extension.exe", Check(message));
        Assert.Null(Check(Top + "\r\nbegin 644 notes.txt\r\n`\r\nend\r\n"));
    }

    [Fact]
    public void Deep_nesting_beyond_the_bound_is_malformed_and_within_it_is_read()
    {
        static string Nest(int depth)
        {
            var body = "Content-Type: application/octet-stream; name=\"evil.exe\"\r\n\r\nx\r\n";
            for (var i = 0; i < depth; i++)
            {
                body = $"Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n{body}--b{i}--\r\n";
            }

            return Top + body;
        }

        Assert.Equal("Banned.Extension.exe", Check(Nest(20)));
        Assert.Equal(MimeStructureCheck.Malformed, Check(Nest(MimeStructureCheck.MaxDepth + 2)));
    }

    [Fact]
    public void An_embedded_message_is_not_held_to_the_first_line_rule()
    {
        Assert.Null(Check("\r\nbody only\r\n", strict: false));
        Assert.Equal(MimeStructureCheck.Malformed, Check("\r\nbody only\r\n"));
    }

    [Fact]
    public void Three_hundred_thousand_tiny_parts_are_read_without_a_detection()
    {
        var text = new StringBuilder(Top + "Content-Type: multipart/mixed; boundary=\"p\"\r\n\r\n");
        for (var i = 0; i < 300_000; i++)
        {
            text.Append("--p\r\nContent-Type: text/plain\r\n\r\nx\r\n");
        }

        text.Append("--p--\r\n");
        Assert.Null(Check(text.ToString()));
    }

    [Fact]
    public void More_entities_than_allowed_is_the_max_files_limit()
    {
        var message = Encoding.ASCII.GetBytes(Multipart("Content-Type: application/pdf; name=\"a.pdf\"\r\n"));
        // The message, its multipart body's two parts: three entities.
        Assert.Null(MimeStructureCheck.CheckMessage(message, Defaults, maxParts: 3));
        Assert.Equal(MimeStructureCheck.TooManyParts, MimeStructureCheck.CheckMessage(message, Defaults, maxParts: 2));
    }

    [Fact]
    public void Every_one_byte_prefix_of_a_message_is_answered_without_an_exception()
    {
        var message = Encoding.ASCII.GetBytes(Multipart("Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename*0*=UTF-8''a%2E; filename*1=pdf\r\n"));
        for (var length = 0; length <= message.Length; length++)
        {
            var result = MimeStructureCheck.CheckMessage(message.AsSpan(0, length), Defaults);
            Assert.True(result is null or MimeStructureCheck.Malformed, $"prefix {length}: {result}");
        }
    }
}
