using System.Net;
using System.Net.Sockets;
using System.Text;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// A downstream that offers XCLIENT but refuses it (550, XCLIENT_README's "insufficient
// authorization"): the gateway logs it, says who the client is with XFORWARD instead, does not
// ask again on that connection, and the mail goes through.
public sealed class XClientFallbackTests(ITestOutputHelper output)
{
    // Every command line of every connection, in order; answers like a permissive server.
    private sealed class RefusingDownstream : IAsyncDisposable
    {
        private readonly TcpListener listener = new(IPAddress.Loopback, 0);
        private readonly Task accepting;

        public RefusingDownstream()
        {
            listener.Start();
            accepting = AcceptAsync();
        }

        public int Port => ((IPEndPoint)listener.LocalEndpoint).Port;
        public EventLog<string> Commands { get; } = new();

        private async Task AcceptAsync()
        {
            var sessions = new List<Task>();
            try
            {
                while (true) sessions.Add(ServeAsync(await listener.AcceptTcpClientAsync()));
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // Stopped.
            }
            await Task.WhenAll(sessions);
        }

        private async Task ServeAsync(TcpClient tcp)
        {
            using (tcp)
            {
                var stream = tcp.GetStream();
                using var reader = new StreamReader(stream, Encoding.Latin1);
                async Task ReplyAsync(string text) => await stream.WriteAsync(Encoding.ASCII.GetBytes(text + "\r\n"));
                await ReplyAsync("220 refusing.test ESMTP");
                try
                {
                    while (await reader.ReadLineAsync() is { } line)
                    {
                        Commands.Add(line);
                        var verb = line.Split(' ', ':')[0].ToUpperInvariant();
                        switch (verb)
                        {
                            case "EHLO":
                                await ReplyAsync("250-refusing.test\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR PROTO HELO PORT LOGIN DESTADDR DESTPORT\r\n250 XFORWARD NAME ADDR PROTO HELO");
                                break;
                            case "XCLIENT": await ReplyAsync("550 5.7.0 Error: insufficient authorization"); break;
                            case "DATA":
                                await ReplyAsync("354 go ahead");
                                while (await reader.ReadLineAsync() is { } data && data != ".") { }
                                await ReplyAsync("250 2.0.0 Ok: queued as REFUSING1");
                                break;
                            case "QUIT": await ReplyAsync("221 2.0.0 Bye"); return;
                            default: await ReplyAsync("250 2.0.0 Ok"); break;
                        }
                    }
                }
                catch (IOException)
                {
                    // The gateway went away.
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            listener.Stop();
            await accepting;
        }
    }

    [Fact]
    public async Task A_refused_XCLIENT_falls_back_to_XFORWARD_and_the_mail_goes_through()
    {
        await using var downstream = new RefusingDownstream();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream.Port);

        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: IPAddress.Parse("127.0.0.2")))
        {
            Assert.Equal(250, (await client.EhloAsync("two.example")).Code);
            for (int i = 0; i < 2; i++)
            {
                Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<sender@example.org>")).Code);
                Assert.Equal(250, (await client.CommandAsync("RCPT TO:<user@dest.test>")).Code);
                Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
                await client.SendAsync(SmtpBytes.DataPayload(TestMessages.Plain($"message {i}", "hello")));
                var final = await client.ReadReplyAsync();
                Assert.True(final.Code == 250 && final.Text.Contains("REFUSING1"), $"{final}");
            }
            await client.CommandAsync("QUIT");
        }
        await gateway.Stderr.WaitForAsync(l => l.Contains("downstream refused XCLIENT, falling back to XFORWARD: 550"),
            TimeSpan.FromSeconds(10), "the gateway's log of the refusal");

        var commands = downstream.Commands.Snapshot();
        // Asked once on the session's connection; XFORWARD before each MAIL instead.
        var xclient = Assert.Single(commands, c => c.StartsWith("XCLIENT ", StringComparison.Ordinal));
        Assert.Contains("ADDR=127.0.0.2 ", xclient);
        Assert.Contains("HELO=two.example", xclient);
        var xforward = commands.Where(c => c.StartsWith("XFORWARD ", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, xforward.Count);
        Assert.All(xforward, c => Assert.Contains("ADDR=127.0.0.2", c));
        Assert.True(commands.ToList().IndexOf(xclient) < commands.ToList().IndexOf(xforward[0]), string.Join("\n", commands));
        await gateway.StopAsync();
    }
}
