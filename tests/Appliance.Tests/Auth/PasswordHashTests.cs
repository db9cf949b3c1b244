using System.Diagnostics;
using Portcullis.Appliance.Auth;
using Xunit;

namespace Portcullis.Appliance.Tests.Auth;

// The passwd file verifies through the system's libcrypt (libxcrypt). Fixed vectors were made by
// `mkpasswd -m METHOD` (Debian's whois package) and `htpasswd -nbB`; fresh ones are made by
// mkpasswd during the test.
public sealed class PasswordHashTests
{
    private const string Password = "Grüße, Welt!";

    [Theory]
    [InlineData("$y$j9T$k8YUqdDeC3QgG3dOrA4vs/$r03egVm2VvmV8FBKEzJAo6bTrr7fFCw9ZKClr5kgBM5")]
    [InlineData("$gy$j9T$3iXiAwAf89YZgipWgPpCW/$i1karEb08jPEiO/zORiEtovJ6ZgaVNv3FpTzXWTQiL8")]
    [InlineData("$7$CU..../....hnfoayWldO/dp3lL.wO2N1$qNe4G16IvaUDlGZXZHpI3QA/.lU0UBoM6oo5B1KjEf.")]
    [InlineData("$6$LTTKmsBYbQR3CjVr$M1N/9s5Yqx8dC47ANaV4JV1CZjnOOwf9Ma8WiCpDIvm6iE2915mqe2fgliBzd2o/e9noNfRknjTF/WTGFHVvI1")]
    [InlineData("$5$B0rMVUoQ99hMHIvK$njOpeRU8W9Mq6.fdq2hoq34/uW2HJX4rLLRqZag4zh.")]
    [InlineData("$2b$05$gd6ll079Z8yw3KZVeut6ceCbEtj92dR9rMCmvpcVT9ILdKPytF4Qm")]
    [InlineData("$2y$04$kSwFzgjOo2xo4Y/9nKl00.WElaeT6HiqGI8K7ya8puQw17nzC5Y9m")]
    public void EveryStrongSchemeOfLibcryptVerifies(string hash)
    {
        var file = PasswdFile.Parse($"alice:{hash}\n", "test");
        Assert.True(file.Verify("alice", Password));
        Assert.False(file.Verify("alice", Password + " "));
        Assert.False(file.Verify("alice", Password[..^1]));
        Assert.False(file.Verify("alice", ""));
        Assert.False(file.Verify("bob", Password));
    }

    [Theory]
    [InlineData("yescrypt", "$y$")]
    [InlineData("gost-yescrypt", "$gy$")]
    [InlineData("scrypt", "$7$")]
    [InlineData("sha512crypt", "$6$")]
    [InlineData("sha256crypt", "$5$")]
    [InlineData("bcrypt", "$2b$")]
    public void FreshHashesFromMkpasswdVerify(string method, string prefix)
    {
        var password = "pw-" + Guid.NewGuid().ToString("N")[..10] + "-ü";
        var hash = Run("mkpasswd", "-m", method, password);
        Assert.StartsWith(prefix, hash);
        var file = PasswdFile.Parse($"# made by mkpasswd\ncarol:{hash}:extra:fields\n", "test");
        Assert.True(file.Verify("carol", password), hash);
        Assert.False(file.Verify("carol", password.ToUpperInvariant()));
    }

    [Fact]
    public void LegacyAndUnknownHashesNeverMatchButUsableUsersStillDo()
    {
        var file = PasswdFile.Parse(
            "md5:$1$8hp8Z.YN$OFRACWeuqmfuHFdfBkDog/\n" +         // mkpasswd -m md5crypt x
            "des:1nxcGScd45z5Y\n" +
            "apr:$apr1$abc$def\n" +
            "locked:!\n" +
            "alice:$y$j9T$k8YUqdDeC3QgG3dOrA4vs/$r03egVm2VvmV8FBKEzJAo6bTrr7fFCw9ZKClr5kgBM5\n", "test");
        Assert.False(file.Verify("md5", "x"));
        Assert.False(file.Verify("locked", ""));
        Assert.False(file.Verify("locked", "!"));
        Assert.True(file.Verify("alice", Password));
    }

    [Fact]
    public void APasswordWithANulNeverMatchesItsPrefix()
    {
        var file = PasswdFile.Parse("alice:$y$j9T$k8YUqdDeC3QgG3dOrA4vs/$r03egVm2VvmV8FBKEzJAo6bTrr7fFCw9ZKClr5kgBM5\n", "test");
        Assert.False(file.Verify("alice", Password + "\0tail"));
    }

    [Fact]
    public void AFileWithoutAUsableLineIsAConfigurationErrorNamingFileAndReasons()
    {
        var path = Path.Combine(Path.GetTempPath(), "portcullis-passwd-" + Guid.NewGuid().ToString("N"));
        File.WriteAllText(path, "# nobody can log in\nmd5:$1$8hp8Z.YN$OFRACWeuqmfuHFdfBkDog/\nlocked:!\nnohash\n");
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => PasswdFile.Watch(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("no usable user", e.Message);
            Assert.Contains("line 2", e.Message);
            Assert.Contains("md5crypt", e.Message);
            Assert.Contains("line 3", e.Message);
            Assert.Contains("line 4", e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void AnEmptyFileIsAConfigurationError()
    {
        var e = Assert.Throws<InvalidDataException>(() => PasswdFile.Parse("# only comments\n\n", "passwd"));
        Assert.Contains("no usable user", e.Message);
    }

    private static string Run(string tool, params string[] args)
    {
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException(tool);
        var output = process.StandardOutput.ReadToEnd().Trim();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{tool} failed (build/deps.sh installs whois for mkpasswd)");
        return output;
    }
}
