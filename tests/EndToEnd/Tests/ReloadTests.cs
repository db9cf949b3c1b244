using System.Text;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Hot reloads of signatures and configuration: `portcullis reload`, SIGHUP and the database
// folder poll; a failed load keeps the old engine (concurrent) or defers mail (low); an invalid
// configuration keeps the running one.
public sealed class ReloadTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);
    private const string NewName = "Portcullis.Test.Reloaded";
    private const string NewString = "portcullis-reload-test-string-7f3a9c";

    public static TheoryData<string> Modes => ["concurrent", "low"];

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task Reload_loads_new_signatures_while_the_gateway_keeps_running(string mode)
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "reload_memory", mode));
        var marked = TestMessages.Plain("carries the new string", "x " + NewString + " y");

        Assert.Equal(250, (await Control.SendAsync(gateway, marked)).Code);
        await AddSignatureAsync(gateway.Config);

        var reload = await Control.ReloadAsync(gateway);
        Assert.True(reload.ExitCode == 0, reload.ToString());
        Assert.Contains("configuration reloaded", reload.Stdout);
        Assert.Contains("signatures", reload.Stdout);

        var refused = await Control.SendAsync(gateway, marked);
        Assert.Equal(554, refused.Code);
        Assert.Contains(NewName, refused.Text);
        Assert.Equal(554, (await Control.SendAsync(gateway, Control.Eicar("old signatures still there"))).Code);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_failed_load_keeps_the_old_engine_and_shows_in_status()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await File.WriteAllTextAsync(Path.Combine(gateway.Config.DatabaseFolder, "broken.ndb"), "this is not a signature\n");

        var reload = await Control.ReloadAsync(gateway);
        Assert.Equal(1, reload.ExitCode);
        Assert.Contains("cannot load", reload.Stdout);
        Assert.Contains("kept", reload.Stdout);

        Assert.Equal(554, (await Control.SendAsync(gateway, Control.Eicar("the old engine still scans"))).Code);
        var status = await Control.StatusAsync(gateway);
        Assert.True(status.ExitCode == 0, status.ToString());
        Assert.Contains("FAILED", status.Stdout);
        Assert.Contains("portcullis_last_reload_failed 1", await Control.GetAsync(gateway.Config.StatusPort, "/metrics"));
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_failed_low_memory_load_defers_mail_until_a_reload_succeeds()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "reload_memory", "low"));
        var signatures = Directory.GetFiles(gateway.Config.DatabaseFolder).ToDictionary(f => f, File.ReadAllBytes);
        foreach (var file in signatures.Keys)
        {
            File.Delete(file);
        }

        var failed = await Control.ReloadAsync(gateway);
        Assert.Equal(1, failed.ExitCode);
        Assert.Contains("NO signatures are loaded", failed.Stdout);
        // With no engine loaded MAIL is deferred (451 4.3.0), before any content is sent.
        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port))
        {
            await client.EhloAsync();
            var mail = await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>");
            Assert.True(mail is { Code: 451, EnhancedCode: "4.3.0" }, mail.ToString());
        }

        Assert.Empty(downstream.Messages.Snapshot());

        foreach (var (file, bytes) in signatures)
        {
            await File.WriteAllBytesAsync(file, bytes);
        }

        var fixedReload = await Control.ReloadAsync(gateway);
        Assert.True(fixedReload.ExitCode == 0, fixedReload.ToString());
        Assert.Equal(250, (await Control.SendAsync(gateway, TestMessages.Plain("engine back", "hello"))).Code);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task The_folder_poll_reloads_when_a_database_file_changes()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "reload_check_interval", "1s"));

        await AddSignatureAsync(gateway.Config);
        await gateway.Stderr.WaitForAsync(l => l.Contains("reload requested: database folder changed"), Wait, "the poll noticing the new file");
        await gateway.Stderr.WaitForAsync(l => l.Contains("signatures reloaded"), Wait, "the reload");

        var refused = await Control.SendAsync(gateway, TestMessages.Plain("new string", NewString));
        Assert.Equal(554, refused.Code);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Sighup_applies_a_valid_configuration_and_keeps_the_running_one_when_invalid()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var large = TestMessages.LargeText("about 300 KB", 300 * 1024);
        Assert.Equal(250, (await Control.SendAsync(gateway, large)).Code);

        // A smaller size limit applies to new sessions; a new listener needs a restart (logged).
        gateway.Config.Set("limits", "max_message_size", "100K").Set("scan", "max_scan_size", "100K").Set("scan", "max_file_size", "100K")
            .Set("general", "interfaces", $"127.0.0.1:{gateway.Port}, 127.0.0.1:{GatewayIni.FreePort()}");
        await File.WriteAllTextAsync(gateway.Config.FilePath, gateway.Config.Render());
        gateway.Signal(GatewayProcess.SIGHUP);
        await gateway.Stderr.WaitForAsync(l => l.Contains("need a restart") && l.Contains("[general] interfaces"), Wait, "the restart-needed line");
        await gateway.Stderr.WaitForAsync(l => l.Contains("signatures reloaded"), Wait, "the reload after SIGHUP");
        Assert.Equal(552, (await Control.SendAsync(gateway, large)).Code);

        await File.WriteAllTextAsync(gateway.Config.FilePath, gateway.Config.Render() + "[scan]\nno_such_key = 1\n");
        var reload = await Control.ReloadAsync(gateway);
        Assert.Equal(1, reload.ExitCode);
        Assert.Contains("configuration NOT reloaded", reload.Stdout);
        await gateway.Stderr.WaitForAsync(l => l.Contains("configuration reload failed"), Wait, "the invalid-configuration line");
        Assert.Equal(552, (await Control.SendAsync(gateway, large)).Code);
        Assert.Equal(250, (await Control.SendAsync(gateway, TestMessages.Plain("small", "still flowing"))).Code);
        await gateway.StopAsync();
    }

    private static Task AddSignatureAsync(GatewayIni config) =>
        File.WriteAllTextAsync(Path.Combine(config.DatabaseFolder, "reloaded.ndb"),
            $"{NewName}:0:*:{Convert.ToHexStringLower(Encoding.ASCII.GetBytes(NewString))}\n");

    // Certificates are renewed in place (certbot, acme.sh) and relay lists edited: SIGHUP picks
    // both up without a restart.
    [Fact]
    public async Task Sighup_rereads_the_certificate_and_the_relay_settings()
    {
        var folder = GatewayIni.NewRoot();
        try
        {
            var (cert, key) = AccessFixtures.SelfSignedCertificate(folder, "before.test");
            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
                .Set("relay", "local_domains", "one.test")
                .Set("relay", "trusted_networks", "127.0.0.1/32")
                .Set("tls", "certificate", cert)
                .Set("tls", "key", key));
            Assert.Contains("CN=before.test", await ServerCertificateSubjectAsync(gateway.Port));
            Assert.Equal((250, 550), await RecipientCodesAsync(gateway.Port));

            AccessFixtures.SelfSignedCertificate(folder, "after.test");
            gateway.Config.Set("relay", "local_domains", "two.test");
            await File.WriteAllTextAsync(gateway.Config.FilePath, gateway.Config.Render());
            gateway.Signal(GatewayProcess.SIGHUP);
            await gateway.Stderr.WaitForAsync(l => l.Contains("signatures reloaded"), Wait, "the reload after SIGHUP");

            Assert.Contains("CN=after.test", await ServerCertificateSubjectAsync(gateway.Port));
            Assert.Equal((550, 250), await RecipientCodesAsync(gateway.Port));
            await gateway.StopAsync();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static async Task<string> ServerCertificateSubjectAsync(int port)
    {
        using var client = new MailKit.Net.Smtp.SmtpClient();
        string subject = "";
        client.ServerCertificateValidationCallback = (_, certificate, _, _) => { subject = certificate?.Subject ?? ""; return true; };
        await client.ConnectAsync("127.0.0.1", port, MailKit.Security.SecureSocketOptions.StartTls);
        await client.DisconnectAsync(quit: true);
        return subject;
    }

    // RCPT replies from an untrusted address for x@one.test and x@two.test.
    private static async Task<(int One, int Two)> RecipientCodesAsync(int port)
    {
        await using var client = await RawSmtpClient.ConnectAsync(port, from: AccessFixtures.Untrusted);
        await client.EhloAsync();
        Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<a@sender.test>")).Code);
        var one = (await client.CommandAsync("RCPT TO:<x@one.test>")).Code;
        var two = (await client.CommandAsync("RCPT TO:<x@two.test>")).Code;
        return (one, two);
    }
}
