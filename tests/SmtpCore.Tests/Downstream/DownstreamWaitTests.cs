using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

// Waiting for replies: the caller's token, the per-connection reply deadline, and failure of
// commands still waiting, with callers' tokens registered once per token rather than per command.
public class DownstreamWaitTests
{
    [Fact]
    public async Task CancelingTheCallersTokenCancelsItsWaitAndTheLateReplyIsStillConsumedInTurn()
    {
        var canceled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            Assert.Equal("NOOP", await s.ReadLineAsync());
            await canceled.Task;
            await s.ReplyAsync("250 2.0.0 late noop");
            await s.ExpectAsync("RSET", "250 2.0.0 rset ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            using var cts = new CancellationTokenSource();
            var noop = client.NoopAsync(cts.Token);
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => noop);
            canceled.SetResult();
            Assert.False(client.IsBroken);
            Assert.Equal("rset ok", (await client.RsetAsync()).Text);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task WithoutPipeliningACanceledWaitDoesNotLetTheNextCommandGoBeforeTheReply()
    {
        var canceled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync();
            Assert.Equal("NOOP", await s.ReadLineAsync());
            await canceled.Task;
            Assert.True(await s.StaysQuietAsync(TimeSpan.FromMilliseconds(150)), "the client wrote ahead of the NOOP reply");
            await s.ReplyAsync("250 2.0.0 noop");
            await s.ExpectAsync("RSET", "250 2.0.0 rset");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            using var cts = new CancellationTokenSource();
            var noop = client.NoopAsync(cts.Token);
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => noop);
            var rset = client.RsetAsync();
            canceled.SetResult();
            Assert.Equal("rset", (await rset).Text);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task CancelingOneTokenLeavesCommandsWaitingWithOtherTokens()
    {
        var canceled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            Assert.Equal("MAIL FROM:<s@test>", await s.ReadLineAsync());
            Assert.Equal("RCPT TO:<a@test>", await s.ReadLineAsync());
            Assert.Equal("RCPT TO:<b@test>", await s.ReadLineAsync());
            await canceled.Task;
            await s.SendAsync("250 2.1.0 mail\r\n250 2.1.5 a\r\n250 2.1.5 b\r\n");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            using var first = new CancellationTokenSource();
            using var second = new CancellationTokenSource();
            using var third = new CancellationTokenSource();
            var mail = client.MailAsync("<s@test>", null, first.Token);
            var a = client.RcptAsync("<a@test>", null, second.Token);
            var b = client.RcptAsync("<b@test>", null, third.Token);
            await client.FlushAsync();
            await first.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => mail);
            Assert.False(a.IsCompleted);
            canceled.SetResult();
            Assert.Equal("a", (await a).Text);
            Assert.Equal("b", (await b).Text);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task ASilentServerTimesOutACallerThatWaitsWithAToken()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            Assert.Equal("MAIL FROM:<s@test>", await s.ReadLineAsync());
            await s.WaitForCloseAsync();   // never answers
        });

        await using var client = await server.ConnectAsync(replyTimeout: TimeSpan.FromMilliseconds(300));
        using var session = new CancellationTokenSource();
        var mail = client.MailAsync("<s@test>", null, session.Token);
        await client.FlushAsync(session.Token);
        var ex = await Assert.ThrowsAsync<DownstreamException>(() => mail);
        Assert.Equal($"downstream 127.0.0.1:{server.Port} did not reply within 300ms to MAIL", ex.Message);
        Assert.True(client.IsBroken);
        await server.AssertScriptSucceededAsync();   // the client closed the socket
    }

    [Fact]
    public async Task AShortReplyTimeoutStillFiresAfterALongDataTimeoutWasRunning()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync();
            await s.ExpectAsync("DATA", "354 go ahead");
            await s.ReadDataAsync();
            await Task.Delay(TimeSpan.FromMilliseconds(600));   // a slow scan: longer than the reply timeout
            await s.ReplyAsync("250 2.0.0 queued");
            Assert.Equal("NOOP", await s.ReadLineAsync());
            await s.WaitForCloseAsync();   // never answers
        });

        var options = server.Options();
        await using var client = await DownstreamClient.ConnectAsync(new DownstreamOptions
        {
            Host = options.Host,
            Port = options.Port,
            HeloName = options.HeloName,
            ReplyTimeout = TimeSpan.FromMilliseconds(300),
            DataReplyTimeout = TimeSpan.FromSeconds(30),
        }, CancellationToken.None);
        var final = await client.SendMessageAsync(ReadOnlyMemory<byte>.Empty, new ArrayContent("body\r\n"u8.ToArray()));
        Assert.Equal("queued", final.Text);
        var ex = await Assert.ThrowsAsync<DownstreamException>(() => client.NoopAsync());
        Assert.EndsWith("did not reply within 300ms to NOOP", ex.Message);
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task TheServerClosingFailsCommandsWaitingWithATokenAsDownstreamErrors()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            await s.ReadLineAsync();
            await s.ReadLineAsync();
            s.Close();
        });

        await using var client = await server.ConnectAsync();
        using var session = new CancellationTokenSource();
        var mail = client.MailAsync("<s@test>", null, session.Token);
        var rcpt = client.RcptAsync("<a@test>", null, session.Token);
        await client.FlushAsync(session.Token);
        foreach (var task in new[] { mail, rcpt })
        {
            var ex = await Assert.ThrowsAsync<DownstreamException>(() => task);
            Assert.Contains("closed the connection", ex.Message);
        }
        Assert.True(client.IsBroken);
        await session.CancelAsync();   // the client let go of the token: nothing left to cancel
        await Assert.ThrowsAsync<DownstreamException>(() => client.NoopAsync(CancellationToken.None));
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task AReplyLargerThanOneReadIsParsedWhole()
    {
        var lines = Enumerable.Range(0, 40).Select(i => $"line {i} " + new string('x', 900)).ToArray();
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            Assert.Equal("NOOP", await s.ReadLineAsync());
            await s.SendAsync(string.Concat(lines.Select((line, i) => $"250{(i == lines.Length - 1 ? ' ' : '-')}{line}\r\n")));
            await s.ExpectAsync("RSET", "250 2.0.0 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var reply = await client.NoopAsync();
            Assert.Equal(lines, reply.Lines);
            Assert.Equal("ok", (await client.RsetAsync()).Text);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task AReplyOverTheLimitBreaksTheClient()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            Assert.Equal("NOOP", await s.ReadLineAsync());
            try
            {
                for (int i = 0; i < 200; i++) await s.SendAsync("250-" + new string('x', 1000) + "\r\n");
            }
            catch (IOException)
            {
                // The client closed the connection part way: what it had to do.
            }
            await s.WaitForCloseAsync();
        });

        await using var client = await server.ConnectAsync();
        var ex = await Assert.ThrowsAsync<DownstreamException>(() => client.NoopAsync());
        Assert.Contains("malformed reply", ex.Message);
        Assert.True(client.IsBroken);
        await server.AssertScriptSucceededAsync();
    }
}
