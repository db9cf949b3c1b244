using System.Text;
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

public class DownstreamClientTests
{
    private static readonly byte[] Prefix = "Received: from client.test by gw.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"u8.ToArray();

    [Fact]
    public async Task ConnectReadsAMultiLineBannerAndTheCapabilities()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.SendAsync("220-fake.test ESMTP\r\n220 second banner line\r\n");
            Assert.Equal("EHLO gw.test", await s.ReadLineAsync());
            await s.SendAsync("250-fake.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-CHUNKING\r\n250 XFORWARD NAME ADDR\r\n");
            await s.ExpectAsync("QUIT", "221 2.0.0 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            Assert.Equal(["fake.test ESMTP", "second banner line"], client.Banner.Lines);
            Assert.Equal(250, client.EhloReply.Code);
            Assert.True(client.Capabilities.Pipelining);
            Assert.True(client.Capabilities.Chunking);
            Assert.Equal(1000000, client.Capabilities.MaxSize);
            Assert.Equal("127.0.0.1:" + server.Port, client.RemoteDescription);
            Assert.False(client.IsBroken);
        }
        await server.AssertScriptSucceededAsync();   // DisposeAsync sent QUIT
    }

    [Fact]
    public async Task ARefusingBannerThrowsWithTheReply()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.SendAsync("554 5.7.1 no service for you\r\n");
            await s.WaitForCloseAsync();
        });

        var ex = await Assert.ThrowsAsync<DownstreamException>(() => server.ConnectAsync());
        Assert.Equal(554, ex.Reply!.Code);
        Assert.Equal("5.7.1", ex.Reply.Enhanced);
        await server.AssertScriptSucceededAsync();   // the client closed the connection
    }

    [Fact]
    public async Task EhloRefusedFallsBackToHelo()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.SendAsync("220 old.test SMTP\r\n");
            await s.ExpectAsync("EHLO gw.test", "502 5.5.1 command not recognized");
            await s.ExpectAsync("HELO gw.test", "250 old.test");
            await s.ExpectAsync("MAIL FROM:<a@test>", "250 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            Assert.Equal("old.test", client.EhloReply.Text);
            Assert.False(client.Capabilities.Pipelining);
            Assert.Equal(250, (await client.MailAsync("<a@test>")).Code);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task WithPipeliningMailAndRcptsTravelInOneWriteAndRepliesMapInOrder()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", "ENHANCEDSTATUSCODES");
            int readsBefore = s.ReadSizes.Count;
            // All three lines are read before anything is answered: a lock-step client would stall here.
            Assert.Equal("MAIL FROM:<sender@test> BODY=8BITMIME", await s.ReadLineAsync());
            Assert.Equal("RCPT TO:<one@test>", await s.ReadLineAsync());
            Assert.Equal("RCPT TO:<two@test> NOTIFY=NEVER", await s.ReadLineAsync());
            Assert.Equal(1, s.ReadSizes.Count - readsBefore);
            await s.SendAsync("250 2.1.0 sender ok\r\n250 2.1.5 one ok\r\n550 5.1.1 two unknown\r\n");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var mail = client.MailAsync("<sender@test>", "BODY=8BITMIME");
            var one = client.RcptAsync("<one@test>");
            var two = client.RcptAsync("<two@test>", "NOTIFY=NEVER");
            Assert.False(mail.IsCompleted);
            await client.FlushAsync();

            Assert.Equal("2.1.0", (await mail).Enhanced);
            Assert.Equal("one ok", (await one).Text);
            var refused = await two;
            Assert.Equal(550, refused.Code);
            Assert.Equal("5.1.1", refused.Enhanced);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task WithoutPipeliningCommandsGoInLockStep()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("8BITMIME");
            foreach (var (line, reply) in new[] { ("MAIL FROM:<s@test>", "250 ok"), ("RCPT TO:<a@test>", "250 a"), ("RCPT TO:<b@test>", "451 b later") })
            {
                Assert.Equal(line, await s.ReadLineAsync());
                // Nothing may follow a command until its reply was sent.
                Assert.True(await s.StaysQuietAsync(TimeSpan.FromMilliseconds(150)), $"client wrote ahead after {line}");
                await s.ReplyAsync(reply);
            }
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var mail = client.MailAsync("<s@test>");
            var a = client.RcptAsync("<a@test>");
            var b = client.RcptAsync("<b@test>");
            Assert.Equal("ok", (await mail).Text);
            Assert.Equal("a", (await a).Text);
            Assert.Equal(451, (await b).Code);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Theory]
    [InlineData("Subject: plain\r\n\r\nhello\r\n")]
    [InlineData("Subject: dots\r\n\r\n.one dot\r\n..two dots\r\n...\r\n.\r\nafter\r\n")]
    [InlineData("Subject: no final line end\r\n\r\nlast line")]
    [InlineData(".\r\n")]
    [InlineData(".")]
    [InlineData("\r\n.\r\n")]
    [InlineData("")]
    public async Task DataIsDotStuffedAndArrivesByteIdentical(string bodyText)
    {
        var body = Encoding.ASCII.GetBytes(bodyText);
        byte[]? received = null;
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", "8BITMIME");
            Assert.Equal("MAIL FROM:<s@test>", await s.ReadLineAsync());
            Assert.Equal("RCPT TO:<r@test>", await s.ReadLineAsync());
            Assert.Equal("DATA", await s.ReadLineAsync());
            await s.SendAsync("250 ok\r\n250 ok\r\n354 go ahead\r\n");
            received = await s.ReadDataAsync();
            await s.ReplyAsync("250 2.0.0 queued as ABC123");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var mail = client.MailAsync("<s@test>");
            var rcpt = client.RcptAsync("<r@test>");
            // Short reads from the content exercise the stuffing state across chunk boundaries.
            var final = await client.SendMessageAsync(Prefix, new ArrayContent(body, maxRead: 3));
            Assert.Equal(250, (await mail).Code);
            Assert.Equal(250, (await rcpt).Code);
            Assert.Equal("queued as ABC123", final.Text);
        }
        await server.AssertScriptSucceededAsync();

        byte[] sent = [.. Prefix, .. body];
        bool endsWithCrLf = sent.Length >= 2 && sent[^2] == '\r' && sent[^1] == '\n';
        byte[] expected = endsWithCrLf ? sent : [.. sent, (byte)'\r', (byte)'\n'];
        Assert.Equal(expected, received);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task BdatSendsAMultiChunkBodyByteIdentical(bool pipelining)
    {
        var body = new byte[3 * 1024 * 1024 + 17];
        new Random(5321).NextBytes(body);
        "\r\n.\r\n"u8.CopyTo(body.AsSpan(1000));   // BDAT sends dots as they are
        var received = new MemoryStream();
        var chunkLines = new List<string>();
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync(pipelining ? ["PIPELINING", "CHUNKING"] : ["CHUNKING"]);
            await s.ExpectAsync("MAIL FROM:<s@test>", "250 ok");
            await s.ExpectAsync("RCPT TO:<r@test>", "250 ok");
            while (true)
            {
                var line = await s.ReadLineAsync();
                chunkLines.Add(line);
                var parts = line.Split(' ');
                Assert.Equal("BDAT", parts[0]);
                received.Write(await s.ReadExactAsync(int.Parse(parts[1])));
                bool last = parts.Length == 3 && parts[2] == "LAST";
                await s.ReplyAsync(last ? "250 2.0.0 message queued" : $"250 2.0.0 {parts[1]} octets received");
                if (last) break;
            }
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var mail = client.MailAsync("<s@test>");
            var rcpt = client.RcptAsync("<r@test>");
            await client.FlushAsync();
            Assert.Equal(250, (await mail).Code);
            Assert.Equal(250, (await rcpt).Code);
            var final = await client.SendMessageAsync(Prefix, new ArrayContent(body, maxRead: 10_000));
            Assert.Equal("message queued", final.Text);
        }
        await server.AssertScriptSucceededAsync();

        Assert.True(chunkLines.Count > 3, $"expected several chunks, got {chunkLines.Count}");
        Assert.EndsWith(" LAST", chunkLines[^1]);
        Assert.Equal([.. Prefix, .. body], received.ToArray());
    }

    [Fact]
    public async Task ARefusedDataReturnsTheReplyAndSendsNoBody()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("8BITMIME");
            await s.ExpectAsync("DATA", "554 5.5.1 no valid recipients");
            // The next thing on the wire is the next command, not message text.
            await s.ExpectAsync("NOOP", "250 2.0.0 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var reply = await client.SendMessageAsync(Prefix, new ArrayContent("Subject: x\r\n\r\nbody\r\n"u8.ToArray()));
            Assert.Equal(554, reply.Code);
            Assert.Equal(250, (await client.NoopAsync()).Code);
            Assert.False(client.IsBroken);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task TheServerClosingMidDataBreaksTheClient()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("8BITMIME");
            await s.ExpectAsync("DATA", "354 go ahead");
            await s.ReadExactAsync(1000);
            s.Close();
        });

        await using var client = await server.ConnectAsync();
        var body = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("a line of text\r\n", 200_000)));
        var ex = await Assert.ThrowsAsync<DownstreamException>(() => client.SendMessageAsync(Prefix, new ArrayContent(body)).AsTask());
        Assert.Contains("127.0.0.1", ex.Message);
        Assert.True(client.IsBroken);
        await Assert.ThrowsAsync<DownstreamException>(() => client.NoopAsync());
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task TheServerClosingBeforeAReplyFailsEveryOutstandingCommand()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            await s.ReadLineAsync();
            await s.ReadLineAsync();
            await s.ReadLineAsync();
            s.Close();
        });

        await using var client = await server.ConnectAsync();
        var mail = client.MailAsync("<s@test>");
        var one = client.RcptAsync("<a@test>");
        var two = client.RcptAsync("<b@test>");
        await client.FlushAsync();
        foreach (var task in new[] { mail, one, two })
        {
            var ex = await Assert.ThrowsAsync<DownstreamException>(() => task);
            Assert.Contains("closed the connection", ex.Message);
        }
        Assert.True(client.IsBroken);
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task AServerThatHangsTimesOut()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("ENHANCEDSTATUSCODES");
            Assert.Equal("MAIL FROM:<s@test>", await s.ReadLineAsync());
            await s.WaitForCloseAsync();   // never answers
        });

        await using var client = await server.ConnectAsync(replyTimeout: TimeSpan.FromMilliseconds(300));
        var ex = await Assert.ThrowsAsync<DownstreamException>(() => client.MailAsync("<s@test>"));
        Assert.Equal($"downstream 127.0.0.1:{server.Port} did not reply within 300ms to MAIL", ex.Message);
        Assert.True(client.IsBroken);
        var later = await Assert.ThrowsAsync<DownstreamException>(() => client.RsetAsync());
        Assert.Contains("no longer usable", later.Message);
        await server.AssertScriptSucceededAsync();   // the client closed the socket
    }

    [Fact]
    public async Task AMalformedReplyBreaksTheClient()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync();
            Assert.Equal("NOOP", await s.ReadLineAsync());
            await s.SendAsync("hello there\r\n");
            await s.WaitForCloseAsync();
        });

        await using var client = await server.ConnectAsync();
        var ex = await Assert.ThrowsAsync<DownstreamException>(() => client.NoopAsync());
        Assert.Contains("malformed reply", ex.Message);
        Assert.True(client.IsBroken);
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task AnUnsolicitedReplyBreaksTheClient()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.SendAsync("220 fake.test\r\n");
            Assert.Equal("EHLO gw.test", await s.ReadLineAsync());
            // The 421 rides with the EHLO reply, before any further command can have been flushed.
            await s.SendAsync("250-fake.test\r\n250 PIPELINING\r\n421 4.4.2 going away\r\n");
            await s.WaitForCloseAsync();
        });

        await using var client = await server.ConnectAsync();
        var ex = await Assert.ThrowsAsync<DownstreamException>(async () =>
        {
            var mail = client.MailAsync("<s@test>");   // buffered, not flushed: the 421 cannot be its reply
            await client.FlushAsync();
            await mail;
        });
        Assert.True(client.IsBroken);
        Assert.Contains("no command asked for: 421 4.4.2 going away", ex.Message);
        await server.AssertScriptSucceededAsync();
    }

    [Theory]
    [InlineData("NOOP\r\nRSET")]
    [InlineData("NOOP\n")]
    [InlineData("NOOP\r")]
    [InlineData("NO\0OP")]
    [InlineData("")]
    public async Task CrOrLfInACommandIsRefused(string command)
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            await s.ExpectAsync("NOOP", "250 ok");   // nothing else reached the wire
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            // Thrown synchronously, before anything is queued.
            Assert.Throws<ArgumentException>(() => { _ = client.SendCommandAsync(command); });
            Assert.Throws<ArgumentException>(() => { _ = client.MailAsync("<a@test>\r\nRCPT TO:<victim@test>"); });
            Assert.Throws<ArgumentException>(() => { _ = client.RcptAsync("<a@test>", "NOTIFY=NEVER\r\nDATA"); });
            Assert.Equal(250, (await client.NoopAsync()).Code);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task XForwardSendsOnlyOfferedAttributesAsXText()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", "XFORWARD NAME ADDR PROTO");
            Assert.Equal("XFORWARD NAME=client+20host.test ADDR=192.0.2.1 PROTO=ESMTP+2B+3D", await s.ReadLineAsync());
            Assert.Equal("MAIL FROM:<>", await s.ReadLineAsync());
            await s.SendAsync("250 2.0.0 ok\r\n250 2.1.0 ok\r\n");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var xforward = client.XForwardAsync(
            [
                new("NAME", "client host.test"),
                new("ADDR", "192.0.2.1"),
                new("HELO", "not offered"),
                new("proto", "ESMTP+="),
            ]);
            var mail = client.MailAsync("<>");
            await client.FlushAsync();
            Assert.Equal(250, (await xforward)!.Code);
            Assert.Equal(250, (await mail).Code);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task XForwardIsSkippedWhenNotOffered()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
            Assert.Null(await client.XForwardAsync([new("ADDR", "192.0.2.1")]));
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task ConnectingToAClosedPortThrows()
    {
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();

        var ex = await Assert.ThrowsAsync<DownstreamException>(() => DownstreamClient.ConnectAsync(
            new DownstreamOptions { Host = "127.0.0.1", Port = port, HeloName = "gw.test" }, CancellationToken.None));
        Assert.Contains($"127.0.0.1:{port}", ex.Message);
    }

    [Fact]
    public async Task ConnectsByHostName()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync();
            await s.ExpectAsync("QUIT", "221 bye");
        });

        var options = server.Options();
        await using (var client = await DownstreamClient.ConnectAsync(
            new DownstreamOptions { Host = "localhost", Port = options.Port, HeloName = options.HeloName }, CancellationToken.None))
        {
            Assert.Equal($"localhost[127.0.0.1]:{server.Port}", client.RemoteDescription);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task TheFinalDataReplyHasItsOwnTimeout()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync();
            await s.ExpectAsync("DATA", "354 go ahead");
            await s.ReadDataAsync();
            await s.WaitForCloseAsync();   // scanning forever, never answers
        });

        var options = server.Options();
        await using var client = await DownstreamClient.ConnectAsync(new DownstreamOptions
        {
            Host = options.Host,
            Port = options.Port,
            HeloName = options.HeloName,
            ReplyTimeout = TimeSpan.FromSeconds(10),
            DataReplyTimeout = TimeSpan.FromMilliseconds(300),
        }, CancellationToken.None);
        var ex = await Assert.ThrowsAsync<DownstreamException>(
            () => client.SendMessageAsync(Prefix, new ArrayContent("body\r\n"u8.ToArray())).AsTask());
        Assert.EndsWith("did not reply within 300ms to end of data", ex.Message);
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task ARefusedBdatChunkIsReturnedWithoutSendingTheRest()
    {
        var body = new byte[DownstreamClient.ChunkSize * 3];
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("CHUNKING");
            Assert.Equal($"BDAT {DownstreamClient.ChunkSize}", await s.ReadLineAsync());
            await s.ReadExactAsync(DownstreamClient.ChunkSize);
            await s.ReplyAsync("552 5.3.4 message too big");
            await s.ExpectAsync("RSET", "250 2.0.0 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var reply = await client.SendMessageAsync(ReadOnlyMemory<byte>.Empty, new ArrayContent(body));
            Assert.Equal(552, reply.Code);
            Assert.Equal(250, (await client.RsetAsync()).Code);
        }
        await server.AssertScriptSucceededAsync();
    }
}
