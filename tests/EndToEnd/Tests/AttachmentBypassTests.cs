using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Issue 9: every attachment-policy bypass is refused by the published binary with the default
// configuration, 554 and a Banned.* name, because the policy runs on libclamav's own unpacking.
public sealed class AttachmentBypassTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => new(BypassMessages.All().Select(c => c.Case));

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Each_bypass_is_refused_with_a_banned_name(string name)
    {
        var message = BypassMessages.All().Single(c => c.Case == name).Message;
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, TimeSpan.FromSeconds(60));

        var reply = await RawTransaction.SendAsync(client, message);

        output.WriteLine($"{name}: {reply}");
        Assert.Equal(554, reply.Code);
        Assert.Contains("Banned.", reply.Text);
        var log = await gateway.WaitForLogRecordAsync();
        Assert.StartsWith("Banned.", log["virus"]);
        Assert.Empty(downstream.Messages.Snapshot());
        await gateway.StopAsync();
    }

    [Fact]
    public async Task The_same_zip_is_refused_every_time_it_is_sent()
    {
        // libclamav's clean cache is keyed by content: it must not let a zip through the second time.
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var message = PolicyMessages.Multipart("again", "", PolicyMessages.TextPart("hi\r\n"),
            PolicyMessages.Attachment("a.zip", BypassMessages.EvilZip(), "application/zip"));
        for (var i = 0; i < 3; i++)
        {
            await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
            var reply = await RawTransaction.SendAsync(client, message);
            Assert.Equal(554, reply.Code);
            Assert.Contains("Banned.Extension.exe", reply.Text);
        }

        await gateway.StopAsync();
    }

    [Fact]
    public async Task Banned_types_catch_a_pe_file_named_invoice_dat_only_when_asked()
    {
        var message = PolicyMessages.Multipart("pe", "", PolicyMessages.TextPart("hi\r\n"),
            PolicyMessages.Attachment("invoice.dat", BypassMessages.HarmlessPe));
        await using var downstream = TestSmtpServer.Start();
        await using (var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "banned_types", "msexe, elf")))
        {
            await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
            var reply = await RawTransaction.SendAsync(client, message);
            Assert.Equal(554, reply.Code);
            Assert.Contains("Banned.Type.msexe", reply.Text);
            await gateway.StopAsync();
        }

        await using (var gateway = await GatewayProcess.StartAsync(output, downstream))
        {
            await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
            Assert.Equal(250, (await RawTransaction.SendAsync(client, message)).Code);
            await gateway.StopAsync();
        }
    }

    [Fact]
    public async Task Twenty_nested_multiparts_do_not_pass_silently()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var reply = await RawTransaction.SendAsync(client, BypassMessages.NestedMultiparts(20));

        // libclamav stops at max_recursion; alert_exceeds_max (default yes) makes that a detection.
        Assert.Equal(554, reply.Code);
        Assert.Contains("Heuristics.Limits.Exceeded.MaxRecursion", reply.Text);
        Assert.Empty(downstream.Messages.Snapshot());
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Ordinary_attachments_and_archives_still_pass()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var harmless = "plain text notes\r\n"u8.ToArray();
        var messages = new[]
        {
            PolicyMessages.Multipart("ok", "", PolicyMessages.TextPart("hi\r\n"), PolicyMessages.Attachment("notes.txt", harmless, "text/plain"),
                PolicyMessages.Attachment("a.zip", PolicyMessages.Zip(("dir/notes.txt", harmless)), "application/zip"),
                PolicyMessages.Attachment("b.tgz", BypassMessages.Gzip(BypassMessages.Tar(("notes.txt", harmless)), null), "application/gzip"),
                "Content-Type: message/rfc822\r\n\r\n" + SmtpBytes.Text(PolicyMessages.Plain("forwarded", "hello"))),
            NestedMultiparts(5),
        };
        foreach (var message in messages)
        {
            await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
            var reply = await RawTransaction.SendAsync(client, message);
            Assert.True(reply.Code == 250, reply.ToString());
        }

        await gateway.StopAsync();

        static byte[] NestedMultiparts(int depth) => BypassMessages.NestedMultiparts(depth);
    }
}
