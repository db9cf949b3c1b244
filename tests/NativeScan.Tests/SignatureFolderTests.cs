using System.Text;

namespace Portcullis.NativeScan.Tests;

// Database version/time from .cvd/.cld headers (read with cl_cvdhead), and change detection
// with cl_statinidir/cl_statchkdir.
public sealed class SignatureFolderTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("portcullis-db-").FullName;

    [Fact]
    public void Cvd_headers_give_versions_and_build_time()
    {
        WriteHeader("main.cvd", version: 62, buildTime: 1_700_000_000);
        WriteHeader("daily.cld", version: 27_512, buildTime: 1_735_000_000);
        File.WriteAllText(Path.Combine(folder, "local.ndb"), "x");

        var (version, time) = SignatureFolder.Describe(folder);

        Assert.Equal("daily 27512, main 62", version);
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1_735_000_000), time);
    }

    [Fact]
    public void Folder_without_headers_is_custom_with_the_newest_file_time()
    {
        var newest = new DateTime(2025, 3, 1, 12, 0, 0, DateTimeKind.Utc);
        File.WriteAllText(Path.Combine(folder, "a.ndb"), "x");
        File.WriteAllText(Path.Combine(folder, "b.hdb"), "x");
        File.SetLastWriteTimeUtc(Path.Combine(folder, "a.ndb"), newest.AddDays(-1));
        File.SetLastWriteTimeUtc(Path.Combine(folder, "b.hdb"), newest);

        var (version, time) = SignatureFolder.Describe(folder);

        Assert.Equal("custom", version);
        Assert.Equal(new DateTimeOffset(newest), time);
    }

    [Fact]
    public void Watch_notices_a_new_database_file()
    {
        File.WriteAllText(Path.Combine(folder, "a.ndb"), "Test.A:0:*:41414141\n");
        using var watch = new DatabaseWatch(folder);

        Assert.False(watch.HasChanged());
        File.WriteAllText(Path.Combine(folder, "b.ndb"), "Test.B:0:*:42424242\n");

        Assert.True(watch.HasChanged());
    }

    [Fact]
    public void Watch_on_a_missing_folder_throws()
    {
        Assert.Throws<ClamAVException>(() => new DatabaseWatch(Path.Combine(folder, "missing")));
    }

    public void Dispose() => SignatureFixture.DeleteFolder(folder);

    // A CVD/CLD starts with a 512-byte text header: ClamAV-VDB:time:version:sigs:flevel:md5:dsig:builder:stime.
    private void WriteHeader(string name, uint version, long buildTime)
    {
        var header = $"ClamAV-VDB:01 Jan 2025 00-00 +0000:{version}:1000:200:{new string('0', 32)}:signature:builder:{buildTime}";
        File.WriteAllBytes(Path.Combine(folder, name), Encoding.ASCII.GetBytes(header.PadRight(512)));
    }
}
