using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Client misbehaviour and limits: disconnecting mid-message, size, recipients, bad commands.
public sealed class SessionTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Client_that_disconnects_mid_DATA_delivers_nothing()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        await RawTransaction.BeginAsync(client);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        // Past memory_threshold (1M), so the unfinished message was spilling to temp_folder.
        var partial = TestMessages.LargeText("cut off", 3 << 20);
        await client.SendAsync(SmtpBytes.DotStuff(partial));

        client.Abort();

        // The gateway must let go of its downstream transaction: RSET, or QUIT/close.
        var rset = downstream.Rsets.WaitForCountAsync(1, Wait, "RSET");
        var closed = downstream.WaitAllSessionsClosedAsync(Wait);
        var first = await Task.WhenAny(rset, closed);
        await first; // rethrows a timeout
        VirusTests.AssertNoEndOfData(downstream);
        await gateway.StopAsync(); // also: the spilled file is gone
    }

    [Fact]
    public async Task Declared_size_over_the_limit_is_refused_at_MAIL_with_552()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("limits", "max_message_size", "1M"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        Assert.True((await client.EhloAsync()).Advertises("SIZE"));
        var mail = await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}> SIZE=5000000");

        Assert.Equal(552, mail.Code);
        Assert.Equal("5.3.4", mail.EnhancedCode);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Message_over_the_limit_is_refused_with_552_after_the_data()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("limits", "max_message_size", "1M"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var final = await RawTransaction.SendAsync(client, TestMessages.LargeText("too big", 3 << 20));

        Assert.Equal(552, final.Code);
        Assert.Equal("5.3.4", final.EnhancedCode);
        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("rejected", log["action"]);
        Assert.Contains("552", log["downstream"]);
        Assert.Equal(250, (await client.CommandAsync("NOOP")).Code); // the session goes on
        Assert.Equal(221, (await client.CommandAsync("QUIT")).Code);
        // Pooled downstream connections stay open for the next client; shutdown closes them.
        await gateway.StopAsync();
        await downstream.WaitAllSessionsClosedAsync(Wait);
        VirusTests.AssertNoEndOfData(downstream);
    }

    [Fact]
    public async Task Recipients_past_max_recipients_get_452_and_the_rest_are_delivered()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("limits", "max_recipients", "3"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        await client.EhloAsync();
        Assert.Equal(250, (await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>")).Code);

        var replies = new List<SmtpReply>();
        for (var i = 1; i <= 4; i++)
        {
            replies.Add(await client.CommandAsync($"RCPT TO:<user{i}@dest.test>"));
        }

        Assert.Equal([250, 250, 250, 452], replies.Select(r => r.Code));
        Assert.Equal("4.5.3", replies[3].EnhancedCode);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(SmtpBytes.DataPayload(TestMessages.Plain("many recipients", "hello")));
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message"));
        Assert.Equal(3, delivered.RcptCommands.Count);
        Assert.DoesNotContain(delivered.RcptCommands, r => r.Contains("user4@"));
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Too_many_bad_commands_get_421_and_the_connection_closes()
    {
        const int maxErrors = 3;
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("limits", "max_errors", maxErrors.ToString()));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var codes = new List<int>();
        for (var i = 0; i <= maxErrors + 1 && codes.LastOrDefault() != 421; i++)
        {
            await client.SendAsync("XYZZY nothing happens\r\n");
            var reply = await client.ReadReplyOrCloseAsync();
            Assert.True(reply is not null, $"closed without a 421\n{client.Transcript}");
            codes.Add(reply.Code);
        }

        // max_errors errors are answered with 5xx; the 421 comes with the last of them or the next.
        Assert.True(codes.LastOrDefault() == 421, $"no 421 after {codes.Count} bad commands\n{client.Transcript}");
        Assert.InRange(codes.Count, maxErrors, maxErrors + 1);
        Assert.All(codes.SkipLast(1), code => Assert.Equal(5, code / 100));
        Assert.Null(await client.ReadReplyOrCloseAsync()); // and then it hangs up
        await gateway.StopAsync();
    }
}
