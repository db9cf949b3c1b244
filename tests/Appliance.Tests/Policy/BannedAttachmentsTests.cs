using System.IO.Compression;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Policy;
using Xunit;

namespace Portcullis.Appliance.Tests.Policy;

public sealed class BannedAttachmentsTests
{
    private static readonly BannedAttachments Defaults = BannedAttachments.From(new ScanSection());

    [Theory]
    [InlineData("setup.exe", "Banned.Extension.exe")]
    [InlineData("SETUP.EXE", "Banned.Extension.exe")]
    [InlineData("run.exe.", "Banned.Extension.exe")]
    [InlineData("run.exe  ", "Banned.Extension.exe")]
    [InlineData("script.js", "Banned.Extension.js")]
    [InlineData("disk.iso", "Banned.Extension.iso")]
    [InlineData("folder/sub\\tool.scr", "Banned.Extension.scr")]
    [InlineData("invoice.pdf.exe", "Banned.DoubleExtension")]
    [InlineData("invoice.PDF .exe", "Banned.DoubleExtension")]
    [InlineData("photo.jpg.scr", "Banned.DoubleExtension")]
    [InlineData("report.doc.vbe", "Banned.DoubleExtension")]
    [InlineData("archive.tar.gz", null)]
    [InlineData("invoice.pdf", null)]
    [InlineData("exe", null)]
    [InlineData("readme", null)]
    [InlineData("my.exe.notes.txt", null)]
    [InlineData("", null)]
    [InlineData(null, null)]
    public void DefaultNameRules(string? name, string? expected) => Assert.Equal(expected, Defaults.CheckFileName(name));

    [Fact]
    public void DoubleExtensionRuleCoversExecutablesNotInTheList()
    {
        var rules = new BannedAttachments(["iso"], banDoubleExtensions: true, [], EncryptedArchivePolicy.Allow);
        Assert.Equal("Banned.DoubleExtension", rules.CheckFileName("invoice.pdf.exe"));
        Assert.Null(rules.CheckFileName("tool.exe"));
        var withoutDouble = new BannedAttachments(["exe"], banDoubleExtensions: false, [], EncryptedArchivePolicy.Allow);
        Assert.Equal("Banned.Extension.exe", withoutDouble.CheckFileName("invoice.pdf.exe"));
    }

    [Theory]
    [InlineData("application/x-msdownload", "Banned.ContentType")]
    [InlineData("Application/X-MSDownload", "Banned.ContentType")]
    [InlineData("application/pdf", null)]
    [InlineData("text/plain", null)]
    public void ContentTypes(string type, string? expected) => Assert.Equal(expected, Defaults.CheckContentType(type));

    [Fact]
    public void WildcardContentType()
    {
        var rules = new BannedAttachments([], false, ["audio/*"], EncryptedArchivePolicy.Allow);
        Assert.Equal("Banned.ContentType", rules.CheckContentType("audio/mpeg"));
        Assert.Null(rules.CheckContentType("audiox/mpeg"));
    }

    [Fact]
    public void NamesInsideZipArchivesAndNestedZips()
    {
        Assert.Equal("Banned.Extension.exe", Defaults.CheckZip(Zip(("docs/readme.txt", "hi"u8.ToArray()), ("bin/tool.exe", [1, 2]))));
        Assert.Equal("Banned.DoubleExtension", Defaults.CheckZip(Zip(("inner.zip", Zip(("invoice.pdf.exe", [1])).ToArray()))));
        Assert.Null(Defaults.CheckZip(Zip(("a.txt", [1]), ("b.pdf", [2]))));
    }

    [Fact]
    public void EncryptedMembersAreBannedOnlyWhenBlocked()
    {
        var encrypted = MarkEncrypted(Zip(("secret.txt", "x"u8.ToArray())).ToArray());
        Assert.Null(Defaults.CheckZip(new MemoryStream(encrypted)));
        var blocking = new BannedAttachments([], false, [], EncryptedArchivePolicy.Block);
        Assert.Equal("Banned.EncryptedArchive", blocking.CheckZip(new MemoryStream(encrypted)));
        Assert.Null(blocking.CheckZip(Zip(("plain.txt", [1]))));
    }

    [Fact]
    public void UnreadableArchiveIsLeftToTheScanner() =>
        Assert.Null(Defaults.CheckZip(new MemoryStream("PK not really a zip"u8.ToArray())));

    internal static MemoryStream Zip(params (string Name, byte[] Content)[] entries)
    {
        var stream = new MemoryStream();
        using (var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var (name, content) in entries)
            {
                using var entry = zip.CreateEntry(name).Open();
                entry.Write(content);
            }
        }

        stream.Position = 0;
        return stream;
    }

    // Sets the "encrypted" bit (general purpose flag bit 0) in every local and central header.
    internal static byte[] MarkEncrypted(byte[] zip)
    {
        for (var i = 0; i + 4 <= zip.Length; i++)
        {
            if (zip[i] == 'P' && zip[i + 1] == 'K' && zip[i + 2] == 3 && zip[i + 3] == 4) zip[i + 6] |= 1;
            if (zip[i] == 'P' && zip[i + 1] == 'K' && zip[i + 2] == 1 && zip[i + 3] == 2) zip[i + 8] |= 1;
        }

        return zip;
    }
}
