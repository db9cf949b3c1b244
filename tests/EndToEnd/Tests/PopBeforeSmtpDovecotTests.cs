using System.Net;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// POP-before-SMTP with a real POP server: a private Dovecot runs the shipped post-login script
// (rootfs/usr/lib/portcullis/dovecot-pop-before-smtp), which writes the gateway's
// pop_before_smtp_file as read from the gateway's own INI file. 127.0.0.2 logs in over POP3 and
// may then relay; 127.0.0.3, which never logged in, may not.
public sealed class PopBeforeSmtpDovecotTests(ITestOutputHelper output)
{
    private static async Task<SmtpReply> ForeignRcptFromAsync(GatewayProcess gateway, string address)
    {
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: IPAddress.Parse(address));
        Assert.Equal(220, client.Banner.Code);
        await client.EhloAsync("roaming.test");
        Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<alice@local.test>")).Code);
        return await client.CommandAsync("RCPT TO:<friend@foreign.test>");
    }

    [Fact]
    public async Task A_Dovecot_POP3_login_lets_that_address_relay_and_no_other()
    {
        var folder = GatewayIni.NewRoot();
        try
        {
            // The script runs as the dovecot user: it needs its own copy, and a folder it may write.
            var script = Path.Combine(folder, "dovecot-pop-before-smtp");
            File.Copy(Path.Combine(PortcullisBinary.RepositoryRoot()!, "rootfs/usr/lib/portcullis/dovecot-pop-before-smtp"), script);
            File.SetUnixFileMode(script, (UnixFileMode)0b111_101_101);
            var logins = Directory.CreateDirectory(Path.Combine(folder, "logins")).FullName;
            AccessFixtures.Tool("chown", null, "dovecot", logins);
            var pop = Path.Combine(logins, "pop-before-smtp");

            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
                .Set("relay", "local_domains", "local.test")
                .Set("relay", "trusted_networks", "127.0.0.1/32")
                .Set("relay", "pop_before_smtp_file", pop)
                .Set("relay", "pop_before_smtp_ttl", "10m"));
            await using var dovecot = await PrivateDovecot.StartAsync(output, "alice", "pop-secret",
                $"{script} --config {gateway.Config.FilePath}");

            Assert.Equal(550, (await ForeignRcptFromAsync(gateway, "127.0.0.2")).Code);   // not logged in yet
            Assert.StartsWith("-ERR", await dovecot.LoginAsync(IPAddress.Parse("127.0.0.2"), "alice", "wrong"));
            Assert.False(File.Exists(pop), "a failed login recorded an address");

            Assert.StartsWith("+OK", await dovecot.LoginAsync(IPAddress.Parse("127.0.0.2"), "alice", "pop-secret"));
            var line = Assert.Single(File.ReadAllLines(pop));
            var fields = line.Split(' ');
            Assert.Equal("127.0.0.2", fields[0]);
            Assert.InRange(long.Parse(fields[1]), DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 60, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1);

            var relayed = await ForeignRcptFromAsync(gateway, "127.0.0.2");
            Assert.True(relayed.Code == 250, $"127.0.0.2 after its POP3 login: {relayed}");
            var refused = await ForeignRcptFromAsync(gateway, "127.0.0.3");
            Assert.Equal(550, refused.Code);
            Assert.Equal("5.7.1", refused.EnhancedCode);

            // A second login keeps one line for the address; another address gets its own.
            Assert.StartsWith("+OK", await dovecot.LoginAsync(IPAddress.Parse("127.0.0.2"), "alice", "pop-secret"));
            Assert.StartsWith("+OK", await dovecot.LoginAsync(IPAddress.Parse("127.0.0.4"), "alice", "pop-secret"));
            Assert.Equal(["127.0.0.2", "127.0.0.4"], File.ReadAllLines(pop).Select(l => l.Split(' ')[0]).Order());
            Assert.Equal(250, (await ForeignRcptFromAsync(gateway, "127.0.0.4")).Code);
            await gateway.StopAsync();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
