using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Policy;
using Portcullis.NativeScan;
using Xunit;

namespace Portcullis.Appliance.Tests.Policy;

// The policy on what libclamav's callbacks report (the callbacks themselves: NativeScan.Tests).
public sealed class AttachmentInspectorTests
{
    private static AttachmentInspector Inspector(ScanSection? scan = null) => new(BannedAttachments.From(scan ?? new ScanSection()));

    private static string? File(AttachmentInspector inspector, string? name, string type, int depth = 2, byte[]? content = null) =>
        inspector.InspectFile(new EmbeddedFile(name, type, depth, new string?[depth], content ?? [], decrypted: false));

    [Theory]
    [InlineData("evil.exe", "TEXT_ASCII", "Banned.Extension.exe")]
    [InlineData("docs/invoice.pdf.scr", "ZIP", "Banned.DoubleExtension")]
    [InlineData("invoice.dat", "MSEXE", null)]
    [InlineData(null, "MSEXE", null)]
    [InlineData("attachment", "MSEXE", null)]
    [InlineData("clamav-0123456789abcdef0123456789abcdef.tmp", "MSEXE", null)]
    public void Embedded_files_are_checked_by_name(string? name, string type, string? expected) =>
        Assert.Equal(expected, File(Inspector(), name, type));

    [Theory]
    [InlineData("clamav-0123456789abcdef0123456789abcdef.tmp", null)]
    [InlineData("clamav-0123456789abcdef0123456789abcdef.tmp\n", null)]
    [InlineData("clamav-0123456789ABCDEF0123456789ABCDEF.tmp", "Banned.Extension.tmp")]
    [InlineData("clamav-0123456789abcdef0123456789abcdef0.tmp", "Banned.Extension.tmp")]
    [InlineData("xclamav-0123456789abcdef0123456789abcdef.tmp", "Banned.Extension.tmp")]
    [InlineData("clamav-0123456789abcdéf0123456789abcdef.tmp", "Banned.Extension.tmp")]
    public void Only_libclamavs_own_scratch_names_go_unchecked(string name, string? expected) =>
        Assert.Equal(expected, File(Inspector(new ScanSection { BannedExtensions = new(["tmp"]) }), name, "TEXT_ASCII"));

    [Fact]
    public void Banned_types_catch_content_whatever_the_name()
    {
        var inspector = Inspector(new ScanSection { BannedTypes = new(["msexe", "elf"]) });
        Assert.Equal("Banned.Type.msexe", File(inspector, "invoice.dat", "MSEXE"));
        Assert.Equal("Banned.Type.elf", File(inspector, null, "ELF"));
        Assert.Null(File(inspector, "a.pdf", "PDF"));
        Assert.Null(File(Inspector(), "invoice.dat", "MSEXE"));
    }

    [Fact]
    public void Archive_entries_are_checked_by_name_and_encryption()
    {
        var allow = Inspector();
        Assert.Equal("Banned.Extension.js", allow.InspectArchiveEntry(new ArchiveEntry("7Z", "x/tool.js", 10, false)));
        Assert.Null(allow.InspectArchiveEntry(new ArchiveEntry("ZIP", "a.txt", 10, true)));
        var block = Inspector(new ScanSection { EncryptedArchives = EncryptedArchivePolicy.Block });
        Assert.Equal(BannedAttachments.EncryptedArchive, block.InspectArchiveEntry(new ArchiveEntry("ZIP", "a.txt", 10, true)));
    }

    [Fact]
    public void A_compressed_stream_is_named_as_gunzip_and_7_zip_would_name_it()
    {
        byte[] plain = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
        byte[] named = [0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3, .. "tool.scr"u8, 0, 1, 2, 3];
        Assert.Equal("Banned.Extension.exe", File(Inspector(), "evil.exe.gz", "GZ", content: plain));
        Assert.Equal("Banned.Extension.scr", File(Inspector(), "data.gz", "GZ", content: named));
        Assert.Equal("Banned.Extension.js", File(Inspector(), "x.js.bz2", "BZ"));
        Assert.Null(File(Inspector(), "files.tgz", "GZ", content: plain));
        Assert.Null(File(Inspector(), "report.pdf.gz", "GZ", content: plain));
    }

    [Fact]
    public void A_message_with_more_parts_than_max_files_stops_the_scan_only_when_limits_alert()
    {
        var message = System.Text.Encoding.ASCII.GetBytes("From: a@b\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n"
            + string.Concat(Enumerable.Repeat("--p\r\n\r\nx\r\n", 20)) + "--p--\r\n");
        var alerting = AttachmentInspector.For(BannedAttachments.From(new ScanSection()), new ScanSection { MaxFiles = 10 });
        Assert.Equal(MimeStructureCheck.TooManyParts, File(alerting, null, "MAIL", depth: 0, message));
        Assert.True(alerting.StopScan);

        var quiet = AttachmentInspector.For(BannedAttachments.From(new ScanSection()), new ScanSection { MaxFiles = 10, AlertExceedsMax = false });
        Assert.Null(File(quiet, null, "MAIL", depth: 0, message));
        Assert.False(quiet.StopScan);
    }

    [Fact]
    public void The_message_and_decoded_embedded_messages_get_the_structure_check()
    {
        var malformed = " folded\r\nFrom: a@b\r\n\r\nx\r\n"u8.ToArray();
        Assert.Equal(MimeStructureCheck.Malformed, File(Inspector(), null, "MAIL", depth: 0, malformed));
        var twoTypes = "From: a@b\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx\r\n"u8.ToArray();
        Assert.Equal(MimeStructureCheck.Malformed, File(Inspector(), "textportion", "MAIL", depth: 1, twoTypes));
        Assert.Null(File(Inspector(), "textportion", "TEXT_ASCII", depth: 1, twoTypes));
    }
}
