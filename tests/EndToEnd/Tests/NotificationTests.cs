using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Notifications: what they say, that they survive a restart while the server is down, and that
// automatic mail never causes one. The test server is both the downstream and the notification server.
public sealed class NotificationTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(15);
    private const string Admin = "admin@gw.test";

    [Fact]
    public async Task Administrator_notification_carries_the_facts_and_automatic_mail_never_triggers_one()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c
            .Set("notification", "notify_list", Admin)
            .Set("notification", "sender", "virus-alert@gw.test"));

        // Automatic mail first: an auto-reply, a list message, a bounce (null sender).
        await SendAsync(gateway, TestMessages.Sender, PolicyMessages.Plain("auto", TestSignatures.Eicar, "Auto-Submitted: auto-replied\r\n"));
        await SendAsync(gateway, TestMessages.Sender, PolicyMessages.Plain("list", TestSignatures.Eicar, "Precedence: list\r\n"));
        await SendAsync(gateway, "", PolicyMessages.Plain("bounce", TestSignatures.Eicar));
        await SendAsync(gateway, TestMessages.Sender, PolicyMessages.Plain("notify about me", TestSignatures.Eicar));

        // The outbox sends in queue order: once the last one is here, any earlier one would be too.
        var notice = await downstream.Messages.WaitForAsync(PolicyMessages.IsNotification, Wait, "the administrator notification");
        Assert.Single(downstream.Messages.Snapshot());
        Assert.Equal([$"RCPT TO:<{Admin}>"], notice.RcptCommands);
        var fields = PolicyMessages.HeaderFields(notice.Content);
        Assert.Equal("auto-generated", Assert.Single(fields["Auto-Submitted"]));
        Assert.Contains("virus-alert@gw.test", Assert.Single(fields["From"]));
        Assert.Contains(TestSignatures.EicarName, Assert.Single(fields["Subject"]));
        var text = SmtpBytes.Text(notice.Content);
        var log = await ActionTests.NthLogRecordAsync(gateway, 4);
        Assert.Contains(log["quarantine"], text);
        Assert.Contains("notify about me", text);
        Assert.Contains("127.0.0.1", text);
        Assert.Contains(TestMessages.Sender, text);
        Assert.Contains("rejected", text);
        await WaitForEmptyOutboxAsync(gateway);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Notifications_wait_in_the_outbox_across_a_restart_while_the_server_is_down()
    {
        await using var downstream = TestSmtpServer.Start();
        var deadPort = GatewayIni.FreePort();
        var first = await GatewayProcess.StartAsync(output, downstream, c => c
            .Set("notification", "notify_list", Admin)
            .Set("notification", "smtp_server_port", deadPort.ToString()));
        first.KeepRoot = true;
        var config = first.Config;
        try
        {
            await SendAsync(first, TestMessages.Sender, PolicyMessages.Plain("while down", TestSignatures.Eicar));
            await first.Stderr.WaitForAsync(l => l.Contains("not sent"), Wait, "the failed notification attempt");
            await first.StopAsync();
        }
        finally
        {
            await first.DisposeAsync();
        }

        var waiting = Directory.GetFiles(config.OutboxFolder, "*.json");
        Assert.Single(waiting);
        Assert.Single(Directory.GetFiles(config.OutboxFolder, "*.eml"));

        await using var notifications = TestSmtpServer.Start();
        config.Set("notification", "smtp_server_port", notifications.Port.ToString());
        await using var second = await GatewayProcess.StartAsync(output, config, downstream);
        var notice = await notifications.Messages.WaitForAsync(PolicyMessages.IsNotification, Wait, "the notification after the restart");
        Assert.Contains("while down", SmtpBytes.Text(notice.Content));
        await WaitForEmptyOutboxAsync(second);
        await second.StopAsync();
    }

    private static async Task SendAsync(GatewayProcess gateway, string sender, byte[] message)
    {
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        RawTransaction.ExpectClass(2, await client.EhloAsync(), "EHLO", client);
        RawTransaction.ExpectClass(2, await client.CommandAsync($"MAIL FROM:<{sender}>"), "MAIL", client);
        RawTransaction.ExpectClass(2, await client.CommandAsync($"RCPT TO:<{TestMessages.Recipient}>"), "RCPT", client);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(SmtpBytes.DataPayload(message));
        Assert.Equal(554, (await client.ReadReplyAsync()).Code);
    }

    // Delivered notifications leave the outbox; poll with a deadline (the gateway has no event for it).
    private static async Task WaitForEmptyOutboxAsync(GatewayProcess gateway)
    {
        var deadline = DateTime.UtcNow + Wait;
        while (Directory.EnumerateFiles(gateway.Config.OutboxFolder, "*.json").Any())
        {
            Assert.True(DateTime.UtcNow < deadline, "the outbox did not empty");
            await Task.Delay(20);
        }
    }
}

// A template with an unknown placeholder stops check-config and start-up, naming file and line.
public sealed class TemplateConfigTests : IAsyncLifetime
{
    private GatewayIni config = null!;

    public async Task InitializeAsync()
    {
        PortcullisBinary.Require();
        config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), GatewayIni.FreePort());
        await config.WriteAsync();
        Directory.CreateDirectory(Path.Combine(config.Root, "templates"));
        await File.WriteAllTextAsync(Path.Combine(config.Root, "templates", "notify_sender.txt"), "Subject: {virus}\n\nHello {recipient}\n");
    }

    public Task DisposeAsync()
    {
        Directory.Delete(config.Root, recursive: true);
        return Task.CompletedTask;
    }

    [Theory]
    [InlineData("check-config")]
    [InlineData("run")]
    public async Task Unknown_placeholder_exits_78_naming_the_file_and_the_placeholder(string verb)
    {
        var result = await PortcullisBinary.RunAsync(verb, "--config", config.FilePath);

        Assert.True(result.ExitCode == 78, result.ToString());
        Assert.Contains(Path.Combine(config.Root, "templates", "notify_sender.txt") + ": line 3: unknown placeholder {recipient}", result.Stderr);
    }
}
