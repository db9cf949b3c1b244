using System.IO.Compression;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Messages;
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

    // An overlapping-entry zip bomb (Fifield, "A better zip bomb", 2019): a few hundred KB whose
    // central directory lists the same 32 MB "inner.zip" many times. Looking for nested archives
    // must not inflate each of them: the names are all a cheap check may cost.
    [Fact]
    public void OverlappingEntriesDoNotInflateWithoutBound()
    {
        var single = Zip(("inner.zip", new byte[32 << 20])).ToArray();
        var bomb = new CountingStream(RepeatCentralEntry(single, 200));
        Assert.Null(Defaults.CheckZip(bomb));
        // 200 entries of about 32 KB compressed each; a bounded check reads a few of them at most.
        Assert.True(bomb.BytesRead < 16L * single.Length, $"read {bomb.BytesRead} bytes of a {bomb.Length}-byte archive");
    }

    [Fact]
    public void ManyBombPartsInOneMessageShareOneBound()
    {
        // Each part alone stays under the bound; twenty of them must not multiply it.
        var part = Convert.ToBase64String(RepeatCentralEntry(Zip(("inner.zip", new byte[32 << 20])).ToArray(), 2), Base64FormattingOptions.InsertLineBreaks);
        var message = new System.Text.StringBuilder("Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
        for (var i = 0; i < 20; i++)
            message.Append($"--b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=p{i}.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n{part}\r\n");
        message.Append("--b--\r\n");
        var structure = MessageStructure.Parse(new BytesContent(System.Text.Encoding.ASCII.GetBytes(message.ToString())))!;

        var before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Empty(structure.FindBanned(Defaults, 0));
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // Unbounded: 20 x 64 MB inflated into memory streams; bounded: about one part's worth.
        Assert.True(allocated < 512L << 20, $"{allocated >> 20} MB allocated");
    }

    // The one central directory record of `zip`, listed `count` times, all pointing at the same data.
    internal static byte[] RepeatCentralEntry(byte[] zip, int count)
    {
        var eocd = zip.Length - 22;
        Assert.Equal(0x06054b50u, BitConverter.ToUInt32(zip, eocd));
        var cdSize = (int)BitConverter.ToUInt32(zip, eocd + 12);
        var cdOffset = (int)BitConverter.ToUInt32(zip, eocd + 16);
        var output = new MemoryStream();
        output.Write(zip, 0, cdOffset);
        for (var i = 0; i < count; i++) output.Write(zip, cdOffset, cdSize);
        var end = zip[eocd..];
        BitConverter.GetBytes((ushort)count).CopyTo(end, 8);
        BitConverter.GetBytes((ushort)count).CopyTo(end, 10);
        BitConverter.GetBytes((uint)(cdSize * count)).CopyTo(end, 12);
        output.Write(end);
        return output.ToArray();
    }

    private sealed class CountingStream(byte[] data) : MemoryStream(data, writable: false)
    {
        public long BytesRead { get; private set; }

        public override int Read(byte[] buffer, int offset, int count) => Counted(base.Read(buffer, offset, count));
        public override int Read(Span<byte> buffer) => Counted(base.Read(buffer));
        public override int ReadByte()
        {
            var b = base.ReadByte();
            if (b >= 0) BytesRead++;
            return b;
        }

        private int Counted(int n)
        {
            BytesRead += n;
            return n;
        }
    }

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
