using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Whatever goes wrong downstream, the client hears about it (4xx or 5xx, as the downstream said)
// and never gets a 250 for a message the downstream did not accept.
public sealed class DownstreamFailureTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, (Action<TestSmtpServer> Arrange, int ExpectedClass)> Cases = new()
    {
        ["MAIL gets 451"] = (d => d.Fail(SmtpStep.Mail, "451 4.3.0 mail queue busy"), 4),
        ["MAIL gets 550"] = (d => d.Fail(SmtpStep.Mail, "550 5.7.1 sender refused"), 5),
        ["RCPT gets 450"] = (d => d.Fail(SmtpStep.Rcpt, "450 4.2.1 mailbox busy"), 4),
        ["RCPT gets 550"] = (d => d.Fail(SmtpStep.Rcpt, "550 5.1.1 no such user"), 5),
        ["DATA gets 451"] = (d => d.Fail(SmtpStep.Data, "451 4.3.0 try later"), 4),
        ["DATA gets 554"] = (d => d.Fail(SmtpStep.Data, "554 5.5.0 no data for you"), 5),
        ["end of data gets 452"] = (d => d.Fail(SmtpStep.EndOfData, "452 4.3.1 out of disk"), 4),
        ["end of data gets 554"] = (d => d.Fail(SmtpStep.EndOfData, "554 5.6.0 content refused"), 5),
        ["no banner"] = (d => d.HangAt(SmtpStep.Banner), 4),
        ["hangs after MAIL"] = (d => d.HangAt(SmtpStep.Mail), 4),
        ["hangs after DATA"] = (d => d.HangAt(SmtpStep.Data), 4),
        ["hangs after the body"] = (d => d.HangAt(SmtpStep.EndOfData), 4),
        ["closes after MAIL"] = (d => d.CloseAt(SmtpStep.Mail), 4),
        ["closes after the body"] = (d => d.CloseAt(SmtpStep.EndOfData), 4),
    };

    public static TheoryData<string> CaseNames => [.. Cases.Keys];

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task Downstream_failure_reaches_the_client_and_nothing_is_delivered(string failure)
    {
        var (arrange, expectedClass) = Cases[failure];
        await using var downstream = TestSmtpServer.Start();
        arrange(downstream);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("general", "smtp_server_timeout", "3s"));

        var (refusal, client) = await WalkTransactionAsync(gateway.Port);
        await using (client)
        {
            Assert.True(refusal.Class == expectedClass, $"expected the client to get {expectedClass}xx, got {refusal}\n{client.Transcript}");
            await QuitAsync(client);
        }

        // Pooled downstream connections stay open for the next client; shutdown closes them.
        await gateway.StopAsync();
        await downstream.WaitAllSessionsClosedAsync(TimeSpan.FromSeconds(20));
        Assert.True(downstream.Messages.Count == 0, $"the downstream accepted a message\n{downstream}");
    }

    [Fact]
    public async Task Downstream_not_listening_gives_4xx()
    {
        var nothingThere = GatewayIni.FreePort();
        await using var gateway = await GatewayProcess.StartAsync(output, nothingThere);

        var (refusal, client) = await WalkTransactionAsync(gateway.Port);
        await using (client)
        {
            Assert.True(refusal.Class == 4, $"expected 4xx (451 4.4.1 or 421), got {refusal}\n{client.Transcript}");
            Assert.True(refusal.Code == 421 || refusal.EnhancedCode == "4.4.1", $"expected 421 or x.4.1: {refusal}");
        }

        await gateway.StopAsync();
    }

    // Banner, EHLO, MAIL, RCPT, DATA, body: returns the first reply that is not the positive one
    // for its step. A 250 to the body fails the test: the downstream was told to refuse.
    private static async Task<(SmtpReply Refusal, RawSmtpClient Client)> WalkTransactionAsync(int port)
    {
        var client = await RawSmtpClient.ConnectAsync(port);
        if (client.Banner.Class != 2)
        {
            return (client.Banner, client);
        }

        var steps = new (string Command, int Positive)[]
        {
            ("EHLO client.test", 250),
            ($"MAIL FROM:<{TestMessages.Sender}>", 250),
            ($"RCPT TO:<{TestMessages.Recipient}>", 250),
            ("DATA", 354),
        };
        foreach (var (command, positive) in steps)
        {
            var reply = await client.CommandAsync(command);
            if (reply.Code != positive)
            {
                return (reply, client);
            }
        }

        await client.SendAsync(SmtpBytes.DataPayload(TestMessages.Plain("downstream failure", "hello")));
        var final = await client.ReadReplyAsync();
        Assert.False(final.Class == 2, $"the client got {final} although the downstream did not accept the message\n{client.Transcript}");
        return (final, client);
    }

    private static async Task QuitAsync(RawSmtpClient client)
    {
        try
        {
            await client.SendAsync("QUIT\r\n");
            await client.ReadReplyOrCloseAsync();
        }
        catch (IOException)
        {
            // The gateway may already have closed after a 421.
        }
    }
}
