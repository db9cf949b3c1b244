using System.Text.Json;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// The quarantine copy (complete before the reply, 451 when it cannot be written) and
// `portcullis quarantine list|show|release|delete|purge`.
public sealed class QuarantineTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(15);

    private static Task<CliResult> Quarantine(GatewayProcess gateway, params string[] args) =>
        PortcullisBinary.RunAsync(["quarantine", .. args, "--config", gateway.Config.FilePath]);

    [Fact]
    public async Task Copy_is_complete_before_the_reply_and_the_cli_lists_shows_releases_deletes_and_purges_it()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var sent = PolicyMessages.Multipart("quarantined", "", PolicyMessages.TextPart("see attached\r\n"),
            PolicyMessages.Attachment("clam.exe", File.ReadAllBytes(TestSignatures.ClamExe)));
        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port))
        {
            await RawTransaction.BeginAsync(client, "", TestMessages.Recipient, "carol@dest.test");
            Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
            await client.SendAsync(SmtpBytes.DataPayload(sent));
            var reply = await client.ReadReplyAsync();
            Assert.Equal(554, reply.Code);

            // The reply has come: the copy must already be whole, metadata included.
            var json = Directory.GetFiles(gateway.Config.QuarantineFolder, "*.json");
            var metadata = Assert.Single(json);
            var eml = Path.ChangeExtension(metadata, ".eml");
            Assert.Equal(sent, File.ReadAllBytes(eml));
            Assert.Empty(Directory.GetFiles(gateway.Config.QuarantineFolder, ".*"));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(eml));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(gateway.Config.QuarantineFolder));
        }

        var list = await Quarantine(gateway, "list", "--json");
        Assert.True(list.ExitCode == 0, list.ToString());
        using var document = JsonDocument.Parse(list.Stdout);
        var entry = Assert.Single(document.RootElement.EnumerateArray().ToArray());
        var id = entry.GetProperty("id").GetString()!;
        Assert.Equal(TestMessages.Sender, entry.GetProperty("sender").GetString());
        Assert.Equal([TestMessages.Recipient, "carol@dest.test"], entry.GetProperty("recipients").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal("127.0.0.1", entry.GetProperty("client_address").GetString());
        Assert.Equal("client.test", entry.GetProperty("helo").GetString());
        Assert.Equal("quarantined", entry.GetProperty("subject").GetString());
        Assert.Equal(sent.Length, entry.GetProperty("size").GetInt64());
        Assert.Equal("rejected", entry.GetProperty("action").GetString());
        Assert.StartsWith("<", entry.GetProperty("message_id").GetString());
        Assert.Contains(TestSignatures.ClamExeName, entry.GetProperty("virus").GetString());

        var filtered = await Quarantine(gateway, "list", "--virus", "*nothing*");
        Assert.True(filtered.ExitCode == 0 && filtered.Stdout.Trim().Length == 0, filtered.ToString());
        var text = await Quarantine(gateway, "list", "--virus", "clam", "--since", DateTime.Now.AddHours(-1).ToString("yyyy-MM-ddTHH:mm"));
        Assert.Contains(id, text.Stdout);

        var show = await Quarantine(gateway, "show", id);
        Assert.True(show.ExitCode == 0, show.ToString());
        Assert.Contains("Subject: quarantined", show.Stdout);
        Assert.Contains("virus:", show.Stdout);

        var release = await Quarantine(gateway, "release", id);
        Assert.True(release.ExitCode == 0, release.ToString());
        var released = (await downstream.Messages.WaitForCountAsync(1, Wait, "the released message"))[0];
        Assert.Equal([$"RCPT TO:<{TestMessages.Recipient}>", "RCPT TO:<carol@dest.test>"], released.RcptCommands);
        Assert.StartsWith($"MAIL FROM:<{TestMessages.Sender}>", released.MailCommand);
        Assert.StartsWith("X-Portcullis-Released: " + id, SmtpBytes.Text(released.Content));
        Assert.EndsWith(SmtpBytes.Text(sent), SmtpBytes.Text(released.Content));

        var redirected = await Quarantine(gateway, "release", id, "--to", "admin@dest.test");
        Assert.True(redirected.ExitCode == 0, redirected.ToString());
        var second = (await downstream.Messages.WaitForCountAsync(2, Wait, "the redirected release"))[1];
        Assert.Equal(["RCPT TO:<admin@dest.test>"], second.RcptCommands);

        downstream.Fail(SmtpStep.Rcpt, "550 5.1.1 no such user");
        var refused = await Quarantine(gateway, "release", id, "--to", "gone@dest.test");
        Assert.True(refused.ExitCode == 1, refused.ToString());
        Assert.Contains("550 5.1.1 no such user", refused.Stderr);

        var delete = await Quarantine(gateway, "delete", id);
        Assert.True(delete.ExitCode == 0, delete.ToString());
        var missing = await Quarantine(gateway, "show", id);
        Assert.True(missing.ExitCode == 1, missing.ToString());
        Assert.Contains("no quarantine entry " + id, missing.Stderr);
        Assert.DoesNotContain("   at ", missing.Stderr);

        await gateway.StopAsync();
    }

    [Fact]
    public async Task Purge_removes_old_entries_and_broken_entries_give_clear_errors()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        for (var i = 0; i < 2; i++)
        {
            await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
            Assert.Equal(554, (await RawTransaction.SendAsync(client, PolicyMessages.Plain("e" + i, TestSignatures.Eicar))).Code);
        }

        var ids = Directory.GetFiles(gateway.Config.QuarantineFolder, "*.json").Select(Path.GetFileNameWithoutExtension).Order().ToArray();
        Assert.Equal(2, ids.Length);
        File.WriteAllText(Path.Combine(gateway.Config.QuarantineFolder, ids[0] + ".json"), "{ broken");

        var show = await Quarantine(gateway, "show", ids[0]!);
        Assert.True(show.ExitCode == 1, show.ToString());
        Assert.Contains("is corrupt", show.Stderr);
        Assert.DoesNotContain("   at ", show.Stderr);
        var list = await Quarantine(gateway, "list");
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Contains(ids[1]!, list.Stdout);
        Assert.Contains(ids[0]! + " is corrupt", list.Stderr);
        var bad = await Quarantine(gateway, "show", "../../etc/passwd");
        Assert.True(bad.ExitCode == 1 && bad.Stderr.Contains("is not a quarantine id"), bad.ToString());

        var keep = await Quarantine(gateway, "purge");
        Assert.True(keep.ExitCode == 0, keep.ToString());
        Assert.Contains("purged 0 entries older than 30 days", keep.Stdout);
        var purge = await Quarantine(gateway, "purge", "--older-than", "0");
        Assert.True(purge.ExitCode == 0, purge.ToString());
        Assert.Contains("purged 2 entries", purge.Stdout);
        Assert.Empty(Directory.GetFiles(gateway.Config.QuarantineFolder));
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_copy_that_cannot_be_written_means_451_never_acceptance()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "action", "discard"));

        // The folder is replaced by a plain file: every write into it fails, as on a full disk.
        Directory.Delete(gateway.Config.QuarantineFolder, recursive: true);
        File.WriteAllText(gateway.Config.QuarantineFolder, "");
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        var reply = await RawTransaction.SendAsync(client, PolicyMessages.Plain("no room", TestSignatures.Eicar));

        Assert.Equal(451, reply.Code);
        Assert.Equal("4.3.0", reply.EnhancedCode);
        Assert.Equal("tempfail", (await gateway.WaitForLogRecordAsync())["action"]);
        VirusTests.AssertNothingDelivered(downstream);
        File.Delete(gateway.Config.QuarantineFolder);
        await gateway.StopAsync();
    }
}
