using System.Security.Cryptography;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// ESMTP on the wire through the gateway: extensions, pipelining, 8-bit, large mail, BDAT.
public sealed class WireTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Ehlo_advertises_the_extensions_and_DSN_only_when_the_downstream_does(bool downstreamOffersDsn)
    {
        await using var downstream = TestSmtpServer.Start(DownstreamExtensions.Default | (downstreamOffersDsn ? DownstreamExtensions.Dsn : 0));
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        Assert.Equal(220, client.Banner.Code);
        var ehlo = await client.EhloAsync();

        Assert.Equal(250, ehlo.Code);
        foreach (var keyword in new[] { "PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING" })
        {
            Assert.True(ehlo.Advertises(keyword), $"EHLO does not advertise {keyword}: {ehlo}");
        }

        Assert.Equal(downstreamOffersDsn, ehlo.Advertises("DSN"));
        Assert.Equal(221, (await client.CommandAsync("QUIT")).Code);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Pipelined_transaction_in_one_write_gets_its_replies_in_order()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        var content = TestMessages.Plain("pipelined", "one write for the envelope");

        Assert.True((await client.EhloAsync()).Advertises("PIPELINING"));
        await client.SendAsync($"MAIL FROM:<{TestMessages.Sender}>\r\nRCPT TO:<{TestMessages.Recipient}>\r\nDATA\r\n");
        var mail = await client.ReadReplyAsync();
        var rcpt = await client.ReadReplyAsync();
        var data = await client.ReadReplyAsync();
        Assert.Equal([250, 250, 354], new[] { mail.Code, rcpt.Code, data.Code });
        Assert.Equal("2.1.0", mail.EnhancedCode);
        Assert.Equal("2.1.5", rcpt.EnhancedCode);

        await client.SendAsync(SmtpBytes.DataPayload(content));
        var final = await client.ReadReplyAsync();
        Assert.Equal(250, final.Code);
        Assert.Contains(downstream.QueueId, final.Text);

        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message"));
        await Delivered.AssertGatewayHeaders(Delivered.SplitPrepended(delivered.Content, content));
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Eight_bit_body_arrives_intact()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        var highBytes = Enumerable.Range(0x80, 0x80).Select(b => (byte)b).ToArray();
        byte[] content = [.. SmtpBytes.Ascii(TestMessages.Headers("8bit")), .. highBytes, .. "\r\n"u8, .. highBytes.Reverse(), .. "\r\n"u8];

        var final = await RawTransaction.SendAsync(client, content, " BODY=8BITMIME");

        Assert.Equal(250, final.Code);
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message"));
        Delivered.SplitPrepended(delivered.Content, content);
        Assert.Contains("BODY=8BITMIME", delivered.MailCommand, StringComparison.OrdinalIgnoreCase);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Twenty_megabyte_message_arrives_intact()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, TimeSpan.FromSeconds(120));
        var content = TestMessages.LargeText("twenty megabytes", 20 << 20);

        var final = await RawTransaction.SendAsync(client, content);

        Assert.Equal(250, final.Code);
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message"));
        var tail = delivered.Content.AsSpan(Math.Max(0, delivered.Content.Length - content.Length));
        Assert.Equal(Convert.ToHexString(SHA256.HashData(content)), Convert.ToHexString(SHA256.HashData(tail)));
        await Delivered.AssertGatewayHeaders(Delivered.SplitPrepended(delivered.Content, content));
        await gateway.StopAsync();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Bdat_chunks_arrive_intact(bool downstreamOffersChunking)
    {
        await using var downstream = TestSmtpServer.Start(DownstreamExtensions.Default | (downstreamOffersChunking ? DownstreamExtensions.Chunking : 0));
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        // Lines that start with "." must survive a BDAT-to-DATA conversion (stuffed, then unstuffed).
        var content = TestMessages.Plain("bdat", "first line", ".starts with a dot", ".", "..two dots", "last line");

        await RawTransaction.BeginAsync(client);
        var final = await RawTransaction.SendChunksAsync(client, RawTransaction.Split(content, 10, 11, content.Length / 2, content.Length - 7));

        Assert.Equal(250, final.Code);
        Assert.Contains(downstream.QueueId, final.Text);
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message"));
        await Delivered.AssertGatewayHeaders(Delivered.SplitPrepended(delivered.Content, content));
        await gateway.StopAsync();
    }

    // RFC 6152 / 6531: the gateway cannot downgrade content, so a parameter the downstream
    // lacks is refused at MAIL, before any content is sent.
    [Theory]
    [InlineData(" BODY=8BITMIME", "5.6.3")]
    [InlineData(" SMTPUTF8", "5.6.7")]
    public async Task Parameter_the_downstream_lacks_is_refused_at_MAIL(string parameter, string enhanced)
    {
        await using var downstream = TestSmtpServer.Start(DownstreamExtensions.Pipelining | DownstreamExtensions.EnhancedStatusCodes);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        await client.EhloAsync();

        var mail = await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>{parameter}");

        Assert.Equal(555, mail.Code);
        Assert.Equal(enhanced, mail.EnhancedCode);
        Assert.DoesNotContain(downstream.Commands.Snapshot(), c => c.StartsWith("MAIL", StringComparison.OrdinalIgnoreCase));
        Assert.Equal(250, (await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>")).Code); // the session goes on
        await gateway.StopAsync();
    }
}
