using System.Net;
using Portcullis.Appliance.Configuration;
using Xunit;
using static Portcullis.Appliance.Tests.Configuration.IniText;

namespace Portcullis.Appliance.Tests.Configuration;

// check-config's machine checks: the first-start signature folder, STARTTLS on port 25, the
// service user's access; and the snakeoil TLS default.
public sealed class ConfigChecksTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("portcullis-checks-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public void SnakeoilDefaultIsUsedWhenBothFilesAreReadableAndIsNoTlsOtherwise()
    {
        var cert = Path.Combine(root, "snakeoil.pem");
        var key = Path.Combine(root, "snakeoil.key");
        File.WriteAllText(cert, "cert");
        Assert.False(TlsSection.DebianDefault(cert, key).Enabled);
        Assert.True(TlsSection.DebianDefault(cert, key).FromDefault);
        Assert.False(TlsSection.DebianDefault(cert, root).Enabled); // a folder cannot be read as a key
        File.WriteAllText(key, "key");
        var tls = TlsSection.DebianDefault(cert, key);
        Assert.True(tls.Enabled);
        Assert.Equal((cert, key), (tls.Certificate, tls.Key));
    }

    [Fact]
    public void TheSnakeoilPathsWrittenOutMeanTheDefaultAndOtherPathsAreTakenAsWritten()
    {
        var shippedStyle = Load($"[tls]\ncertificate = {TlsSection.SnakeoilCertificate}\nkey = {TlsSection.SnakeoilKey}");
        Assert.Equal(TlsSection.DebianDefault(), shippedStyle.Tls);
        var other = Load("[tls]\ncertificate = /etc/other.pem\nkey = /etc/other.key");
        Assert.Equal("/etc/other.pem", other.Tls.Certificate);
        Assert.False(other.Tls.FromDefault);
    }

    [Fact]
    public void AFolderWithoutDatabasesIsAFirstStartWarningWithTheAdvice()
    {
        var db = Directory.CreateDirectory(Path.Combine(root, "db")).FullName;
        File.WriteAllText(Path.Combine(db, "freshclam.dat"), "not a database");
        var config = Load($"[scan]\ndatabase_folder = {db}\n[tls]\ncertificate =\nkey =");
        var warning = Assert.Single(ConfigChecks.Warnings(config, Root()), w => w.Contains("no virus signatures", StringComparison.Ordinal));
        Assert.Contains("clamav-freshclam", warning, StringComparison.Ordinal);
        Assert.Contains(".cvd, .cld or .cud", warning, StringComparison.Ordinal);
        Assert.False(SignatureDatabases.Present(db));

        File.WriteAllText(Path.Combine(db, "daily.cld"), "");
        Assert.True(SignatureDatabases.Present(db));
        Assert.DoesNotContain(ConfigChecks.Warnings(config, Root()), w => w.Contains("no virus signatures", StringComparison.Ordinal));
    }

    [Fact]
    public void APort25ListenerWithoutStarttlsIsWarnedAbout()
    {
        var plain = Load("[general]\ninterfaces = 0.0.0.0:25, 127.0.0.1:2526\n[tls]\ncertificate =\nkey =");
        Assert.Contains(ConfigChecks.Warnings(plain, Root()), w => w.Contains("0.0.0.0:25 is port 25 without STARTTLS", StringComparison.Ordinal));

        var otherPort = Load("[general]\ninterfaces = 127.0.0.1:2526\n[tls]\ncertificate =\nkey =");
        Assert.DoesNotContain(ConfigChecks.Warnings(otherPort, Root()), w => w.Contains("STARTTLS", StringComparison.Ordinal));

        var withTls = plain with { Tls = new TlsSection { Certificate = "/etc/c.pem", Key = "/etc/k.pem" } };
        Assert.DoesNotContain(ConfigChecks.Warnings(withTls, Root()), w => w.Contains("STARTTLS", StringComparison.Ordinal));
    }

    [Fact]
    public void AMissingServiceUserIsAWarningNotAnError()
    {
        var config = Load("[tls]\ncertificate =\nkey =");
        Assert.Contains(ConfigChecks.Warnings(config, account: null), w => w.Contains("service user portcullis does not exist", StringComparison.Ordinal));
        Assert.Null(ServiceAccount.FromFiles("portcullis", [], ["root:x:0:0::/root:/bin/sh"], []));
    }

    [Fact]
    public void TheServiceUsersGroupsComeFromPasswdGroupAndTheUnit()
    {
        string[] passwd = ["root:x:0:0::/root:/bin/sh", "portcullis:x:990:985::/var/lib/portcullis:/usr/sbin/nologin"];
        string[] group = ["root:x:0:", "ssl-cert:x:103:postgres", "clamav:x:120:portcullis,other", "portcullis:x:985:"];
        var plain = ServiceAccount.FromFiles("portcullis", [], passwd, group)!;
        Assert.Equal(990u, plain.Uid);
        Assert.Equal([120u, 985u], plain.Gids.Order());
        var withUnit = ServiceAccount.FromFiles("portcullis", ["ssl-cert"], passwd, group)!;
        Assert.Contains(103u, withUnit.Gids);
    }

    [Fact]
    public void AccessIsJudgedByOwnerGroupAndModeAlongThePath()
    {
        // Files this test owns (uid of the test process), judged for a stranger and for us.
        var (uid, gid) = Ids(root);
        var secret = Path.Combine(root, "key.pem");
        File.WriteAllText(secret, "key");
        File.SetUnixFileMode(secret, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.SetUnixFileMode(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);

        var stranger = new ServiceAccount("stranger", 54321, new HashSet<uint> { 54321 }, new Dictionary<uint, string>());
        var owner = new ServiceAccount("owner", uid == 0 ? 54320 : uid, new HashSet<uint> { 54320 }, new Dictionary<uint, string>());
        var member = new ServiceAccount("member", 54322, new HashSet<uint> { gid }, new Dictionary<uint, string>());
        Assert.Contains("mode 600", stranger.Denied(secret, FileAccess.Read));
        Assert.Contains("mode 600", member.Denied(secret, FileAccess.Read));
        File.SetUnixFileMode(secret, UnixFileMode.UserRead | UnixFileMode.GroupRead);
        Assert.Null(member.Denied(secret, FileAccess.Read));
        Assert.NotNull(stranger.Denied(secret, FileAccess.Read));
        // The folder: search only for others; nobody but the owner may write in it.
        Assert.NotNull(member.Denied(root, FileAccess.Write));
        if (uid != 0)
        {
            Assert.Null(owner.Denied(root, FileAccess.Write));
        }

        // A folder on the way that the user cannot search hides everything below it.
        File.SetUnixFileMode(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Assert.Contains(root, member.Denied(secret, FileAccess.Read));
        Assert.Null(new ServiceAccount("root", 0, new HashSet<uint> { 0 }, new Dictionary<uint, string>()).Denied(secret, FileAccess.Read));
        File.SetUnixFileMode(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    [Fact]
    public void UnreadableCertificateKeyAndUnwritableFoldersAreNamed()
    {
        var (_, gid) = Ids(root);
        var key = Path.Combine(root, "key.pem");
        var cert = Path.Combine(root, "cert.pem");
        File.WriteAllText(key, "");
        File.WriteAllText(cert, "");
        File.SetUnixFileMode(key, UnixFileMode.UserRead);
        File.SetUnixFileMode(cert, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        File.SetUnixFileMode(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherExecute | UnixFileMode.GroupExecute);
        var config = Load($"[tls]\ncertificate = {cert}\nkey = {key}\n[quarantine]\nfolder = {root}");
        var stranger = new ServiceAccount("portcullis", 54321, new HashSet<uint> { 54321 }, new Dictionary<uint, string> { [gid] = "ssl-cert" });
        var warnings = ConfigChecks.Warnings(config, stranger).ToList();
        Assert.Contains(warnings, w => w.StartsWith($"[tls] key {key}: service user portcullis cannot read it", StringComparison.Ordinal));
        Assert.DoesNotContain(warnings, w => w.StartsWith("[tls] certificate", StringComparison.Ordinal));
        Assert.Contains(warnings, w => w.StartsWith($"[quarantine] folder {root}: service user portcullis cannot write there", StringComparison.Ordinal));
    }

    private static (uint Uid, uint Gid) Ids(string path)
    {
        var stat = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%u %g", path]) { RedirectStandardOutput = true })!;
        var fields = stat.StandardOutput.ReadToEnd().Trim().Split(' ');
        stat.WaitForExit();
        return (uint.Parse(fields[0]), uint.Parse(fields[1]));
    }

    private static ServiceAccount Root() => new("root", 0, new HashSet<uint> { 0 }, new Dictionary<uint, string>());
}
