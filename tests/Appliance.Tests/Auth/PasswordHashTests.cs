using System.Diagnostics;
using Portcullis.Appliance.Auth;
using Xunit;

namespace Portcullis.Appliance.Tests.Auth;

// SHA-512-crypt and bcrypt against hashes written by the real tools: openssl passwd -6,
// mkpasswd -m sha-512 (whois), htpasswd -nbB (apache2-utils). Fixed vectors, plus fresh ones
// made by the tools during the test.
public sealed class PasswordHashTests
{
    [Theory]
    [InlineData("correct horse", "$6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2scFtv/uamSo5z0")]
    [InlineData("pässwörd", "$6$rounds=10000$rounds10k$SrKWeEmMYfuuU4q7PgThlPQqozmq3SQt29pGqWts/glc8YiQc.It4AUsvRx3v2LNXv53krNKOnVJ6EEyui0ZZ1")]
    public void ShaCryptMatchesOpenSslAndMkpasswd(string password, string hash)
    {
        Assert.Equal(hash, ShaCrypt.Hash(password, hash));
        Assert.True(ShaCrypt.Verify(password, hash));
        Assert.False(ShaCrypt.Verify(password + "x", hash));
    }

    [Theory]
    [InlineData("secret-1", "$2y$04$ir5LpCsZ9LNtlWHB3rgT3.gNHIXJDjWSr.ddsbasMhcglIGIVFOZ.")]
    [InlineData("Ünïcode pw", "$2y$05$yFOmNA7j/JJX053njDSkdOCUhv9nBb5VWwjIz5QmJZvdTusuitxc.")]
    public void BCryptMatchesHtpasswd(string password, string hash)
    {
        Assert.Equal(hash, BCrypt.Hash(password, hash));
        Assert.True(BCrypt.Verify(password, hash));
        Assert.False(BCrypt.Verify(password[..^1], hash));
        Assert.True(BCrypt.Verify(password, "$2b$" + hash[4..])); // same algorithm, other prefix
    }

    [Fact]
    public void BCryptUsesOnlyTheFirst72Bytes()
    {
        const string hash = "$2y$04$5/m8EJPT4.5rZqoWEHpvaeqGsXFYABqwTGSHUoaGiYHzwX09/NdcO"; // htpasswd, 80 x
        Assert.True(BCrypt.Verify(new string('x', 80), hash));
        Assert.True(BCrypt.Verify(new string('x', 72), hash));
        Assert.False(BCrypt.Verify(new string('x', 71), hash));
    }

    [Fact]
    public void FreshHashesFromTheToolsVerify()
    {
        var password = "pw-" + Guid.NewGuid().ToString("N")[..10];
        var sha = Run("openssl", "passwd", "-6", password);
        Assert.StartsWith("$6$", sha);
        Assert.True(ShaCrypt.Verify(password, sha), sha);
        var line = Run("htpasswd", "-nbB", "-C", "4", "user", password);
        var bcrypt = line.Split(':', 2)[1];
        Assert.True(BCrypt.Verify(password, bcrypt), bcrypt);
        Assert.False(BCrypt.Verify(password + "!", bcrypt));
    }

    [Fact]
    public void PasswdFileChecksUsersAndIgnoresOtherHashKinds()
    {
        var file = PasswdFile.Parse(
            "# users\nalice:$2y$04$ir5LpCsZ9LNtlWHB3rgT3.gNHIXJDjWSr.ddsbasMhcglIGIVFOZ.\n" +
            "carol:$6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2scFtv/uamSo5z0:extra\n" +
            "md5:$apr1$abc$def\n", "test");
        Assert.True(file.Verify("alice", "secret-1"));
        Assert.True(file.Verify("carol", "correct horse"));
        Assert.False(file.Verify("alice", "correct horse"));
        Assert.False(file.Verify("nobody", "secret-1"));
        Assert.False(file.Verify("md5", "anything"));
    }

    private static string Run(string tool, params string[] args)
    {
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException(tool);
        var output = process.StandardOutput.ReadToEnd().Trim();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{tool} failed (build/deps.sh installs openssl and apache2-utils)");
        return output;
    }
}
