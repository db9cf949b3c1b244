using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

public sealed class CleanMailTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Clean_message_with_attachment_arrives_byte_identical_below_the_two_added_headers()
    {
        var message = TestMessages.WithAttachment(
            "clean with attachment",
            "Hello Bob,\r\n.a line that starts with a dot\r\n.\r\nthe report is attached.\r\n",
            "report.bin",
            TestMessages.Noise(48 * 1024, seed: 1));
        var sent = await TestMessages.WireBytesOfAsync(message);

        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);

        var response = await TestMessages.SendWithMailKitAsync(gateway.Port, message);

        Assert.Contains(downstream.QueueId, response); // the downstream's own final reply came back
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message"));
        Assert.Contains($"<{TestMessages.Sender}>", delivered.MailCommand);
        Assert.Contains($"<{TestMessages.Recipient}>", Assert.Single(delivered.RcptCommands));
        await Delivered.AssertGatewayHeaders(Delivered.SplitPrepended(delivered.Content, sent));

        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("clean", log["verdict"]);
        Assert.Contains(TestMessages.Sender, log["from"]);
        Assert.Contains(TestMessages.Recipient, log["rcpt"]);
        Assert.Single(downstream.Messages.Snapshot());
        await gateway.StopAsync();
    }
}
