using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Large mail goes on to the downstream while the client is still sending it; only the end of
// data waits for the verdict. Each test holds back the end of the client's message until the
// downstream has been sent DATA (or a first BDAT chunk): without forwarding while it arrives,
// that wait could never end. Then: a clean message is delivered once, byte-identical under the
// added headers; an infected one, or a client that goes away, leaves the downstream with data
// that never ended, which the server discards.
public sealed class ForwardWhileArrivingTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);
    private const int Size = 1_500_000;       // past the gateway's 512 KiB from which it forwards while the message arrives
    private const int HeldBack = 200_000;     // what the client keeps until the downstream has had DATA

    public static TheoryData<string> Transports => ["DATA", "BDAT"];

    private static TestSmtpServer Downstream(string transport) =>
        TestSmtpServer.Start(transport == "BDAT" ? DownstreamExtensions.Default | DownstreamExtensions.Chunking : DownstreamExtensions.Default);

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task A_clean_message_is_on_its_way_downstream_before_the_client_ends_it_and_is_delivered_once(string transport)
    {
        var content = TestMessages.LargeText("forwarded while it arrives", Size);
        await using var downstream = Downstream(transport);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var (early, rest) = await SendAllButTheEndAsync(client, content, downstream, transport);
        await client.SendAsync(rest);
        var reply = await client.ReadReplyAsync();

        Assert.True(reply.Code == 250, $"expected 250, got {reply}\n{client.Transcript}\n{downstream}");
        var received = await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message");
        Assert.Single(received);
        Assert.Equal(transport, received[0].Transport);
        var added = Delivered.SplitPrepended(received[0].Content, content);
        Assert.Contains(added, f => f.Name == "X-Virus-Scanned");
        Assert.DoesNotContain(added, f => f.Name == "X-Virus-Status");
        Assert.Contains(downstream.Sessions.Snapshot(), s => s.Messages.Count == 1);
        output.WriteLine($"the downstream had {early} before the client's last {rest.Length} bytes");
        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("delivered", log["action"]);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_message_the_client_sends_in_BDAT_chunks_is_forwarded_while_the_chunks_arrive()
    {
        var content = TestMessages.LargeText("chunked by its sender", Size);
        await using var downstream = Downstream("DATA");
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        await RawTransaction.BeginAsync(client);

        var chunks = RawTransaction.Split(content, 400_000, 800_000, 1_200_000);
        foreach (var chunk in chunks[..^1])
        {
            await client.SendAsync(SmtpBytes.Ascii($"BDAT {chunk.Length}\r\n"));
            await client.SendAsync(chunk);
            Assert.Equal(250, (await client.ReadReplyAsync()).Code);
        }
        await downstream.Commands.WaitForAsync(c => c == "DATA", Wait, "DATA at the downstream before the client's BDAT LAST");
        var reply = await RawTransaction.SendChunksAsync(client, chunks[^1]);

        Assert.True(reply.Code == 250, $"expected 250, got {reply}\n{client.Transcript}");
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message"));
        Delivered.SplitPrepended(delivered.Content, content);
        await gateway.StopAsync();
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task An_infected_message_already_on_its_way_never_gets_its_end(string transport)
    {
        // The virus comes in the part the client sends last, after the downstream had DATA.
        var content = SmtpBytes.Ascii(SmtpBytes.Text(TestMessages.LargeText("infected while it arrives", Size)) + TestSignatures.Eicar + "\r\n");
        await using var downstream = Downstream(transport);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var (_, rest) = await SendAllButTheEndAsync(client, content, downstream, transport);
        await client.SendAsync(rest);
        var reply = await client.ReadReplyAsync();

        Assert.True(reply.Code == 554, $"expected 554, got {reply}\n{client.Transcript}");
        Assert.Contains(TestSignatures.EicarName, reply.Text);
        await AssertAbandonedAsync(downstream, transport);
        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("infected", log["verdict"]);
        await gateway.StopAsync();
        Assert.True(downstream.Messages.Count == 0 && downstream.Refused.Count == 0, $"the downstream got the message's end\n{downstream}");
    }

    [Fact]
    public async Task A_tagged_message_already_on_its_way_is_abandoned_there_and_delivered_once_changed_on_another_connection()
    {
        var content = SmtpBytes.Ascii(SmtpBytes.Text(TestMessages.LargeText("tag me while it arrives", Size)) + TestSignatures.Eicar + "\r\n");
        await using var downstream = Downstream("DATA");
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "action", "tag"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var (_, rest) = await SendAllButTheEndAsync(client, content, downstream, "DATA");
        await client.SendAsync(rest);
        var reply = await client.ReadReplyAsync();

        Assert.True(reply.Code == 250, $"expected 250, got {reply}\n{client.Transcript}\n{downstream}");
        await AssertAbandonedAsync(downstream, "DATA");
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the tagged message"));
        var fields = PolicyMessages.HeaderFields(delivered.Content);
        Assert.StartsWith("Infected", Assert.Single(fields["X-Virus-Status"]));
        Assert.Equal("[VIRUS] tag me while it arrives", Assert.Single(fields["Subject"]));
        Assert.Equal("tagged", (await gateway.WaitForLogRecordAsync())["action"]);
        // The gateway closed that connection itself: no "lost" line for the replay.
        Assert.DoesNotContain(gateway.Stdout.Snapshot(), l => l.Contains("was lost while the message came in", StringComparison.Ordinal));
        await gateway.StopAsync();
        Assert.Single(downstream.Messages.Snapshot());
    }

    [Fact]
    public async Task With_stream_threshold_0_a_large_infected_message_never_reaches_the_downstream()
    {
        var content = SmtpBytes.Ascii(SmtpBytes.Text(TestMessages.LargeText("scanned before it goes on", Size)) + TestSignatures.Eicar + "\r\n");
        await using var downstream = Downstream("DATA");
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("limits", "stream_threshold", "0"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var reply = await RawTransaction.SendAsync(client, content);

        Assert.True(reply.Code == 554, $"expected 554, got {reply}\n{client.Transcript}");
        await downstream.Rsets.WaitForCountAsync(1, Wait, "the gateway's RSET to the downstream");
        VirusTests.AssertNothingDelivered(downstream);   // not even DATA
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_downstream_that_drops_the_forwarded_data_gets_the_message_whole_on_a_new_connection()
    {
        var content = TestMessages.LargeText("the first connection drops", Size);
        await using var downstream = Downstream("DATA");
        downstream.CloseInsideData();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var (_, rest) = await SendAllButTheEndAsync(client, content, downstream, "DATA");
        await downstream.ClosedSessions.WaitForCountAsync(1, Wait, "the downstream closing inside the forwarded data");
        downstream.ClearScript();
        await client.SendAsync(rest);
        var reply = await client.ReadReplyAsync();

        Assert.True(reply.Code == 250, $"expected 250, got {reply}\n{client.Transcript}\n{downstream}");
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the message sent whole"));
        Delivered.SplitPrepended(delivered.Content, content);
        await gateway.StopAsync();
        Assert.Single(downstream.Messages.Snapshot());
    }

    [Fact]
    public async Task A_client_that_goes_away_mid_message_leaves_the_downstream_nothing_to_deliver()
    {
        var content = TestMessages.LargeText("abandoned by its sender", Size);
        await using var downstream = Downstream("DATA");
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        await SendAllButTheEndAsync(client, content, downstream, "DATA");
        client.Abort();
        await client.DisposeAsync();

        await AssertAbandonedAsync(downstream, "DATA");
        await gateway.StopAsync();
        Assert.True(downstream.Messages.Count == 0 && downstream.Refused.Count == 0, $"the downstream got the message's end\n{downstream}");
    }

    [Fact]
    public async Task Postfix_discards_an_infected_message_whose_data_never_ended_and_delivers_the_clean_one()
    {
        await using var postfix = PrivatePostfix.Start(output, "");
        await using var gateway = await GatewayProcess.StartAsync(output, postfix.Port);
        var infected = SmtpBytes.Ascii(SmtpBytes.Text(TestMessages.LargeText("infected, through Postfix", Size)) + TestSignatures.Eicar + "\r\n");
        var clean = TestMessages.LargeText("clean, through Postfix", Size);

        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port))
        {
            var reply = await RawTransaction.SendAsync(client, infected);
            Assert.True(reply.Code == 554, $"expected 554, got {reply}\n{client.Transcript}");
        }
        // Postfix had the data under way and saw the connection go before its end.
        await postfix.WaitForLogLineAsync(l => l.Contains("lost connection after BDAT") || l.Contains("lost connection after DATA"), "Postfix losing the connection inside the infected message (Postfix offers CHUNKING)");
        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port))
        {
            var reply = await RawTransaction.SendAsync(client, clean);
            Assert.True(reply.Code == 250 && reply.Text.Contains("queued as"), $"expected Postfix's 250, got {reply}\n{client.Transcript}");
        }
        await postfix.WaitForLogLineAsync(l => l.Contains("status=sent"), "the clean message delivered");
        await gateway.StopAsync();
        Assert.Single(postfix.Log().Split('\n'), l => l.Contains("status=sent"));
    }

    // EHLO, MAIL, RCPT, DATA and all of the stuffed content but its last HeldBack bytes and the
    // end; returns once the downstream has been sent DATA or a BDAT chunk, with what is left.
    private static async Task<(string Early, byte[] Remaining)> SendAllButTheEndAsync(RawSmtpClient client, byte[] content,
        TestSmtpServer downstream, string transport)
    {
        await RawTransaction.BeginAsync(client);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        var payload = SmtpBytes.DataPayload(content);
        int cut = payload.Length - HeldBack;
        await client.SendAsync(payload.AsMemory(0, cut));
        var early = await downstream.Commands.WaitForAsync(c => c.StartsWith(transport, StringComparison.OrdinalIgnoreCase), Wait,
            $"{transport} at the downstream while the client still holds the end of its message");
        return (early, payload[cut..]);
    }

    // The downstream connection that had the message is closed inside its data, never ended.
    private static async Task AssertAbandonedAsync(TestSmtpServer downstream, string transport)
    {
        string note = transport == "BDAT" ? "connection closed inside BDAT" : "connection closed inside DATA";
        var closed = await downstream.ClosedSessions.WaitForAsync(s => s.Transcript().Contains(note, StringComparison.Ordinal) ||
                                                                     (transport == "BDAT" && s.CommandLines.Any(c => c.StartsWith("BDAT", StringComparison.Ordinal))),
            Wait, "the downstream connection closed with the message unfinished");
        Assert.DoesNotContain(closed.CommandLines, c => c.EndsWith(" LAST", StringComparison.OrdinalIgnoreCase));
        Assert.Empty(closed.Messages);
    }
}
