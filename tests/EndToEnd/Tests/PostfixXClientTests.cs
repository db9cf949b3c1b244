using System.Net;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// The gateway in front of a real Postfix (a private instance the test configures): with XCLIENT
// Postfix's own check_client_access judges the original client's address, which the test varies
// by binding its socket to 127.0.0.2 or 127.0.0.3; with smtp_server_xclient = no it sees the
// gateway, 127.0.0.1.
public sealed class PostfixXClientTests(ITestOutputHelper output)
{
    private const string ClientAccess = "127.0.0.3 REJECT refused by address\n";

    // EHLO, MAIL, RCPT, and DATA when RCPT was accepted. Returns the RCPT reply, the final one
    // and the client's port.
    private static async Task<(SmtpReply Rcpt, SmtpReply? Final, int Port)> SendFromAsync(int port, string address, string helo)
    {
        await using var client = await RawSmtpClient.ConnectAsync(port, from: IPAddress.Parse(address));
        int clientPort = client.LocalEndPoint.Port;
        Assert.Equal(220, client.Banner.Code);
        Assert.Equal(250, (await client.EhloAsync(helo)).Code);
        var mail = await client.CommandAsync("MAIL FROM:<sender@example.org>");
        Assert.True(mail.Code == 250, $"MAIL: {mail}\n{client.Transcript}");
        var rcpt = await client.CommandAsync("RCPT TO:<user@dest.test>");
        if (rcpt.Code != 250) return (rcpt, null, clientPort);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(SmtpBytes.DataPayload(TestMessages.Plain("through Postfix", "hello")));
        var final = await client.ReadReplyAsync();
        await client.CommandAsync("QUIT");
        return (rcpt, final, clientPort);
    }

    [Fact]
    public async Task Postfix_accepts_or_refuses_by_the_original_client_address_through_XCLIENT()
    {
        await using var postfix = PrivatePostfix.Start(output, ClientAccess);
        await using var gateway = await GatewayProcess.StartAsync(output, postfix.Port);

        var (rcpt, final, port) = await SendFromAsync(gateway.Port, "127.0.0.2", "two.example");
        Assert.Equal(250, rcpt.Code);
        Assert.True(final is { Code: 250 } && final.Text.Contains("queued as"), $"{final}");
        // smtpd logs the client of the queued message: the original one, with its port.
        await postfix.WaitForLogLineAsync(l => l.EndsWith($"client=unknown[127.0.0.2]:{port}"), "the message from 127.0.0.2");

        (rcpt, final, _) = await SendFromAsync(gateway.Port, "127.0.0.3", "three.example");
        Assert.Equal(554, rcpt.Code);
        Assert.Equal("5.7.1", rcpt.EnhancedCode);
        Assert.Contains("Client host rejected: refused by address", rcpt.Text);
        Assert.Null(final);
        // Postfix's own reject line names the original client and the HELO it gave the gateway.
        await postfix.WaitForLogLineAsync(l => l.Contains("reject: RCPT from unknown[127.0.0.3]") && l.Contains("helo=<three.example>"),
            "the refusal of 127.0.0.3");
        // Accepted both times: no fallback to XFORWARD, no verdict at XCLIENT time (smtpd_delay_reject).
        var logs = string.Join("\n", gateway.Stdout.Snapshot().Concat(gateway.Stderr.Snapshot()));
        Assert.DoesNotContain("refused XCLIENT", logs);
        Assert.DoesNotContain("after XCLIENT", logs);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_new_EHLO_is_told_to_Postfix_again_on_a_fresh_connection()
    {
        await using var postfix = PrivatePostfix.Start(output, ClientAccess);
        await using var gateway = await GatewayProcess.StartAsync(output, postfix.Port);

        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: IPAddress.Parse("127.0.0.3"));
        foreach (var helo in new[] { "first.example", "second.example" })
        {
            Assert.Equal(250, (await client.EhloAsync(helo)).Code);
            Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<sender@example.org>")).Code);
            Assert.Equal(554, (await client.CommandAsync("RCPT TO:<user@dest.test>")).Code);
            Assert.Equal(250, (await client.CommandAsync("RSET")).Code);
            await postfix.WaitForLogLineAsync(l => l.Contains("reject: RCPT from unknown[127.0.0.3]") && l.Contains($"helo=<{helo}>"),
                $"the refusal under HELO {helo}");
        }
        await client.CommandAsync("QUIT");
        await gateway.StopAsync();
        // Once ADDR is sent Postfix no longer accepts XCLIENT on that connection: the second
        // identity took a second connection from the gateway, each with one XCLIENT.
        var connections = await postfix.WaitForLogLinesAsync(l => l.Contains("disconnect from unknown[127.0.0.3]"), 2, "both connections' ends");
        Assert.Equal(2, connections.Count);
        Assert.All(connections, l => Assert.Contains(" xclient=0/1 ", l));   // Postfix counts an XCLIENT it answered 220 as 0 of 1
    }

    // More clients inside DATA at once than smtp_server_connections: their connections are lent
    // to the clients still at MAIL. Behind Postfix a connection told about 127.0.0.2 no longer
    // offers XCLIENT (127.0.0.2 is not in smtpd_authorized_xclient_hosts), so a lent one is closed
    // and its slot connects afresh; each client's envelope is given again when its message is
    // ready. Every message is accepted, and Postfix logs each with its original client.
    [Fact]
    public async Task A_burst_past_smtp_server_connections_is_delivered_whole_through_XCLIENT()
    {
        const int clients = 60;
        await using var postfix = PrivatePostfix.Start(output, ClientAccess);
        await using var gateway = await GatewayProcess.StartAsync(output, postfix.Port, ini => ini.Set("general", "smtp_server_connections", "8"));
        var everyoneInData = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inData = 0;
        void Arrive()
        {
            if (Interlocked.Increment(ref inData) == clients) everyoneInData.TrySetResult();
        }

        async Task<(int Port, SmtpReply? Final, string Transcript)> Send(int i)
        {
            bool arrived = false;
            try
            {
                await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, TimeSpan.FromSeconds(60), IPAddress.Parse("127.0.0.2"));
                int port = client.LocalEndPoint.Port;
                Assert.Equal(250, (await client.EhloAsync($"burst{i}.example")).Code);
                Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<sender@example.org>")).Code);
                Assert.Equal(250, (await client.CommandAsync("RCPT TO:<user@dest.test>")).Code);
                Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
                arrived = true;
                Arrive();
                await everyoneInData.Task;
                await client.SendAsync(SmtpBytes.DataPayload(TestMessages.Plain($"burst {i}", "hello")));
                var final = await client.ReadReplyAsync();
                return (port, final, client.Transcript);
            }
            finally
            {
                if (!arrived) Arrive();   // a client that failed early must not keep the others waiting
            }
        }

        var results = await Task.WhenAll(Enumerable.Range(0, clients).Select(Send));
        Assert.All(results, r => Assert.True(r.Final is { Code: 250 } && r.Final.Text.Contains("queued as"), $"{r.Final}\n{r.Transcript}"));
        foreach (var (port, _, _) in results)
            await postfix.WaitForLogLineAsync(l => l.EndsWith($"client=unknown[127.0.0.2]:{port}"), $"the message from port {port}");
        await gateway.StopAsync();
        var log = string.Join("\n", gateway.Stdout.Snapshot().Concat(gateway.Stderr.Snapshot()));
        Assert.Contains("lent by sessions inside DATA: ", log);
        Assert.DoesNotContain("lent by sessions inside DATA: 0", log);
    }

    [Fact]
    public async Task With_smtpd_delay_reject_no_Postfix_refuses_at_XCLIENT_and_the_client_hears_it_at_MAIL()
    {
        await using var postfix = PrivatePostfix.Start(output, ClientAccess, "smtpd_delay_reject = no\n");
        await using var gateway = await GatewayProcess.StartAsync(output, postfix.Port);

        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: IPAddress.Parse("127.0.0.3")))
        {
            Assert.Equal(250, (await client.EhloAsync("three.example")).Code);
            var mail = await client.CommandAsync("MAIL FROM:<sender@example.org>");
            Assert.Equal(554, mail.Code);
            Assert.Contains("Client host rejected: refused by address", mail.Text);
        }
        await gateway.Stderr.WaitForAsync(l => l.Contains("refused by the downstream after XCLIENT") && l.Contains("client=127.0.0.3"),
            TimeSpan.FromSeconds(10), "the gateway's log of the refusal");

        var (rcpt, final, _) = await SendFromAsync(gateway.Port, "127.0.0.2", "two.example");
        Assert.Equal(250, rcpt.Code);
        Assert.Equal(250, final!.Code);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task With_smtp_server_xclient_no_Postfix_sees_the_gateway()
    {
        await using var postfix = PrivatePostfix.Start(output, ClientAccess);
        await using var gateway = await GatewayProcess.StartAsync(output, postfix.Port, ini => ini.Set("general", "smtp_server_xclient", "no"));

        var (rcpt, final, _) = await SendFromAsync(gateway.Port, "127.0.0.3", "three.example");
        Assert.Equal(250, rcpt.Code);
        Assert.Equal(250, final!.Code);
        await postfix.WaitForLogLineAsync(l => l.Contains(": client=localhost[127.0.0.1]:"), "the message from the gateway's address");
        Assert.DoesNotContain("xclient=", postfix.Log());   // the disconnect line counts every command; XCLIENT is not among them
        await gateway.StopAsync();
    }
}
