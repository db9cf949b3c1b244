using Portcullis.EndToEnd.Harness;
using Xunit;

namespace Portcullis.EndToEnd.Tests;

// The downstream stand-in itself: if it were lenient, the smuggling tests could not fail.
// These run without the gateway binary.
public sealed class HarnessTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Downstream_ends_DATA_only_at_CRLF_dot_CRLF_and_records_a_smuggled_MAIL()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var client = await RawSmtpClient.ConnectAsync(downstream.Port);
        await RawTransaction.BeginAsync(client);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);

        await client.SendAsync("Subject: x\r\n\r\na\n.\nb\r.\rc\n.\r\nd\r\n..e\r\n.\r\nMAIL FROM:<evil@x>\r\n");

        Assert.Equal(250, (await client.ReadReplyAsync()).Code);
        Assert.Equal(250, (await client.ReadReplyAsync()).Code); // the second MAIL, seen as a command
        var message = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the message"));
        Assert.Equal("Subject: x\r\n\r\na\n.\nb\r.\rc\n.\r\nd\r\n.e\r\n", SmtpBytes.Text(message.Content));
        await downstream.Commands.WaitForAsync(c => c.Contains("evil@x"), Wait, "the smuggled MAIL");
    }

    [Fact]
    public async Task Downstream_accepts_MailKit_BDAT_and_returns_the_queue_id()
    {
        await using var downstream = TestSmtpServer.Start(DownstreamExtensions.Default | DownstreamExtensions.Chunking);
        var message = TestMessages.WithAttachment("bdat", "hello\r\n", "a.bin", TestMessages.Noise(100_000, seed: 2));

        var response = await TestMessages.SendWithMailKitAsync(downstream.Port, message);

        Assert.Contains(downstream.QueueId, response);
        var received = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the message"));
        Assert.Contains("Subject: bdat", SmtpBytes.Text(received.Content));
    }

    [Fact]
    public async Task Raw_BDAT_chunks_are_joined_without_unstuffing()
    {
        await using var downstream = TestSmtpServer.Start(DownstreamExtensions.Default | DownstreamExtensions.Chunking);
        await using var client = await RawSmtpClient.ConnectAsync(downstream.Port);
        var content = TestMessages.Plain("chunks", ".dot", "\r\n.\r\n", "end");
        await RawTransaction.BeginAsync(client);

        var final = await RawTransaction.SendChunksAsync(client, RawTransaction.Split(content, 3, 50));

        Assert.Equal(250, final.Code);
        var received = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the message"));
        Assert.Equal(content, received.Content);
        Assert.Equal("BDAT", received.Transport);
    }

    [Fact]
    public async Task Scripted_refusal_hang_and_close_behave_as_told()
    {
        await using var downstream = TestSmtpServer.Start().Fail(SmtpStep.Rcpt, "550 5.1.1 no", rcpt: 2).HangAt(SmtpStep.Data);
        await using var client = await RawSmtpClient.ConnectAsync(downstream.Port, TimeSpan.FromMilliseconds(500));
        await client.EhloAsync();
        await client.CommandAsync("MAIL FROM:<a@x>");
        Assert.Equal(250, (await client.CommandAsync("RCPT TO:<b@y>")).Code);
        Assert.Equal(550, (await client.CommandAsync("RCPT TO:<c@y>")).Code);
        await Assert.ThrowsAsync<TimeoutException>(() => client.CommandAsync("DATA"));

        client.Abort();

        await downstream.WaitAllSessionsClosedAsync(Wait);
        Assert.Equal(0, downstream.Messages.Count);
    }

    [Fact]
    public void Dot_stuffing_round_trips()
    {
        var content = SmtpBytes.Ascii(".a\r\n..b\r\n.\r\nc\n.d\r\n");
        var stuffed = SmtpBytes.DotStuff(content);

        Assert.Equal("..a\r\n...b\r\n..\r\nc\n.d\r\n", SmtpBytes.Text(stuffed));
        Assert.Equal(content, SmtpBytes.Unstuff(stuffed));
    }

    [Fact]
    public void Missing_binary_is_reported_with_its_path()
    {
        var error = Assert.Throws<FileNotFoundException>(() => PortcullisBinary.Locate("/nonexistent/portcullis"));

        Assert.Contains("/nonexistent/portcullis", error.Message);
    }
}
