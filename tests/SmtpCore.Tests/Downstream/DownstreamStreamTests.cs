using System.Text;
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

// A message sent while it is still arriving (BeginStreamAsync / ContinueStreamAsync /
// EndStreamAsync / AbandonStream): the server reads each stretch before the end exists, the
// result is byte-identical to a whole send, and an abandoned message never gets its end.
public sealed class DownstreamStreamTests
{
    private static readonly byte[] Prefix = "Received: by gw.test\r\n"u8.ToArray();

    // Content that grows, as the message buffer does while the client sends.
    private sealed class GrowingContent(byte[] whole) : IMessageContent
    {
        public int Visible { get; set; }
        public long Length => Visible;

        public int Read(long offset, Span<byte> destination)
        {
            if (offset >= Visible) return 0;
            int n = (int)Math.Min(destination.Length, Visible - offset);
            whole.AsSpan((int)offset, n).CopyTo(destination);
            return n;
        }
    }

    [Fact]
    public async Task Over_DATA_the_server_reads_each_stretch_before_the_end_and_gets_the_message_byte_identical()
    {
        // The second stretch starts a line with "." and the message does not end in CRLF: the
        // stuffing state and the final CRLF carry across stretches.
        var first = "Subject: s\r\n\r\nline one\r\n"u8.ToArray();
        var second = ".dot at a line start\r\n..two dots\r\nlast line without CRLF"u8.ToArray();
        byte[] whole = [.. first, .. second];
        var content = new GrowingContent(whole);
        var firstRead = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        byte[]? rest = null;
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", "8BITMIME");
            await s.ExpectAsync("DATA", "354 go ahead");
            firstRead.SetResult(await s.ReadExactAsync(Prefix.Length + first.Length));
            rest = await s.ReadDataAsync();
            await s.ReplyAsync("250 2.0.0 queued as S1");
            await s.ExpectAsync("NOOP", "250 2.0.0 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            Assert.Null(await client.BeginStreamAsync(Prefix));
            content.Visible = first.Length;
            await client.ContinueStreamAsync(content);
            // Nothing of the end exists yet, and the server already has the first stretch.
            byte[] early = await firstRead.Task.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal([.. Prefix, .. first], early);
            Assert.True(client.IsStreaming);
            Assert.True(client.IsBroken, "a connection inside a streamed message must look unusable to everyone else");

            content.Visible = whole.Length;
            var final = await client.EndStreamAsync(content);
            Assert.Equal("queued as S1", final.Text);
            Assert.False(client.IsStreaming);
            Assert.False(client.IsBroken);
            Assert.Equal(250, (await client.NoopAsync()).Code);
        }
        await server.AssertScriptSucceededAsync();
        byte[] expected = [.. second, (byte)'\r', (byte)'\n'];
        Assert.Equal(expected, rest);
    }

    [Fact]
    public async Task No_command_can_be_written_into_a_streamed_message()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            await s.ExpectAsync("DATA", "354 go ahead");
            var data = await s.ReadDataAsync();
            Assert.Equal("Received: by gw.test\r\nbody\r\n", Encoding.ASCII.GetString(data));
            await s.ReplyAsync("250 2.0.0 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var content = new GrowingContent("body\r\n"u8.ToArray());
            Assert.Null(await client.BeginStreamAsync(Prefix));
            await Assert.ThrowsAsync<DownstreamException>(() => client.NoopAsync());
            await Assert.ThrowsAsync<DownstreamException>(() => client.RsetAsync());
            await Assert.ThrowsAsync<DownstreamException>(() => client.SendMessageAsync(Prefix, content).AsTask());
            content.Visible = 6;
            Assert.Equal(250, (await client.EndStreamAsync(content)).Code);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task An_abandoned_message_never_gets_its_end_and_no_QUIT_follows()
    {
        var body = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("a line of the message\r\n", 100)));
        var read = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var afterwards = new MemoryStream();
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            await s.ExpectAsync("DATA", "354 go ahead");
            afterwards.Write(await s.ReadExactAsync(Prefix.Length + body.Length));
            read.SetResult();
            // Everything until the client closes: no end of data, no QUIT.
            try
            {
                while (true) afterwards.Write(await s.ReadRawLineAsync());
            }
            catch (EndOfStreamException)
            {
            }
        });

        var client = await server.ConnectAsync();
        var content = new GrowingContent(body) { Visible = body.Length };
        Assert.Null(await client.BeginStreamAsync(Prefix));
        await client.ContinueStreamAsync(content);
        await read.Task.WaitAsync(TimeSpan.FromSeconds(30));
        client.AbandonStream("infected");
        Assert.True(client.IsBroken);
        Assert.False(client.IsStreaming);
        await client.DisposeAsync();
        await server.AssertScriptSucceededAsync();

        var wire = Encoding.ASCII.GetString(afterwards.ToArray());
        Assert.Equal(Encoding.ASCII.GetString([.. Prefix, .. body]), wire);
        Assert.DoesNotContain("\r\n.\r\n", wire);
        Assert.DoesNotContain("QUIT", wire);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task With_CHUNKING_each_stretch_is_a_chunk_and_the_end_is_BDAT_LAST(bool pipelining)
    {
        var body = new byte[300 * 1024];
        new Random(3030).NextBytes(body);
        var content = new GrowingContent(body);
        var lines = new List<string>();
        var received = new MemoryStream();
        var firstChunk = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync(pipelining ? ["PIPELINING", "CHUNKING"] : ["CHUNKING"]);
            while (true)
            {
                var line = await s.ReadLineAsync();
                lines.Add(line);
                var parts = line.Split(' ');
                Assert.Equal("BDAT", parts[0]);
                received.Write(await s.ReadExactAsync(int.Parse(parts[1])));
                firstChunk.TrySetResult();
                bool last = parts.Length == 3 && parts[2] == "LAST";
                await s.ReplyAsync(last ? "250 2.0.0 message queued" : $"250 2.0.0 {parts[1]} octets received");
                if (last) break;
            }
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            Assert.Null(await client.BeginStreamAsync(Prefix));
            content.Visible = 1000;
            await client.ContinueStreamAsync(content);
            await firstChunk.Task.WaitAsync(TimeSpan.FromSeconds(30));
            content.Visible = body.Length;
            await client.ContinueStreamAsync(content);
            // Everything was already sent: the end is an empty LAST chunk.
            var final = await client.EndStreamAsync(content);
            Assert.Equal("message queued", final.Text);
            Assert.False(client.IsBroken);
        }
        await server.AssertScriptSucceededAsync();
        Assert.Equal($"BDAT {Prefix.Length + 1000}", lines[0]);
        Assert.Equal("BDAT 0 LAST", lines[^1]);
        Assert.All(lines[1..^1], l => Assert.DoesNotContain("LAST", l));
        Assert.Equal([.. Prefix, .. body], received.ToArray());
    }

    [Fact]
    public async Task A_refused_DATA_begins_nothing_and_leaves_the_connection_usable()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING");
            await s.ExpectAsync("DATA", "554 5.5.1 no valid recipients");
            await s.ExpectAsync("RSET", "250 2.0.0 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var refusal = await client.BeginStreamAsync(Prefix);
            Assert.Equal(554, refusal!.Code);
            Assert.False(client.IsStreaming);
            Assert.False(client.IsBroken);
            Assert.Equal(250, (await client.RsetAsync()).Code);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task A_refused_chunk_breaks_the_stream()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("CHUNKING");
            var line = await s.ReadLineAsync();
            await s.ReadExactAsync(int.Parse(line.Split(' ')[1]));
            await s.ReplyAsync("552 5.3.4 message too big");
            await s.WaitForCloseAsync();
        });

        var client = await server.ConnectAsync();
        var content = new GrowingContent(new byte[5000]) { Visible = 1000 };
        Assert.Null(await client.BeginStreamAsync(Prefix));
        var refused = await Assert.ThrowsAsync<DownstreamException>(() => client.ContinueStreamAsync(content));
        Assert.Equal(552, refused.Reply!.Code);
        Assert.True(client.IsBroken);
        Assert.False(client.IsStreaming);
        await client.DisposeAsync();
        await server.AssertScriptSucceededAsync();
    }
}
