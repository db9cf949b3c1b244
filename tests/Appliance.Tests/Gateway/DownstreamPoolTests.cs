using System.Globalization;
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Gateway;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Scanning;
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.Appliance.Tests.Gateway;

// The pool of warm downstream connections behind DownstreamLease (issue 13) and the failover
// over smtp_server_address's list (issue 10), against DownstreamSink on loopback.
public sealed class DownstreamPoolTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private readonly MessageLog _log = new(new MemoryStream());

    public void Dispose() => _log.Dispose();

    private GatewayContext Context(string servers, string extra = "", DownstreamTimings? timings = null)
    {
        var config = ConfigLoader.LoadFromString(
            $"[general]\nhostname = gw.test\nsmtp_server_address = {servers}\n{extra}\n[tls]\ncertificate =\nkey =\n", "test.ini");
        return new GatewayContext(config, new NoScanner(), _log, new RelayPolicy(config.Relay))
        {
            DownstreamTimings = timings ?? DownstreamTimings.Default,
        };
    }

    private static string At(DownstreamSink sink) => "127.0.0.1:" + sink.Port.ToString(CultureInfo.InvariantCulture);

    // MAIL alone (pipelined: it goes out with the flush).
    private static async Task MailOnlyAsync(DownstreamClient client)
    {
        var mail = client.MailAsync("<alice@example.org>");
        await client.FlushAsync();
        Assert.Equal(250, (await mail).Code);
    }

    // One whole transaction on the lease's connection, as the gateway makes it.
    private static async Task DeliverAsync(DownstreamLease lease, string to = "<bob@example.net>")
    {
        var client = await lease.AcquireAsync(CancellationToken.None);
        var mail = client.MailAsync("<alice@example.org>");
        var rcpt = client.RcptAsync(to);
        await client.FlushAsync();
        Assert.Equal(250, (await mail).Code);
        Assert.Equal(250, (await rcpt).Code);
        var reply = await client.SendMessageAsync("Subject: t\r\n"u8.ToArray(), new BytesContent("\r\nbody\r\n"u8.ToArray()));
        Assert.Equal(250, reply.Code);
        lease.Touch();
    }

    [Fact]
    public async Task SessionsOneAfterAnotherShareOneDownstreamConnection()
    {
        await using var sink = new DownstreamSink();
        var ctx = Context(At(sink));
        for (int i = 0; i < 5; i++)
        {
            var lease = new DownstreamLease(ctx);
            await DeliverAsync(lease);
            await lease.DropAsync();
        }
        Assert.Equal(5, sink.Messages);
        Assert.Equal(1, ctx.DownstreamPool.Connects);
        var only = Assert.Single(sink.Seen);
        Assert.Single(only.Lines, l => l.StartsWith("EHLO", StringComparison.Ordinal));
        Assert.DoesNotContain("RSET", only.Lines);   // after a delivery the server is ready for the next MAIL
        await ctx.DownstreamPool.CloseAsync();
        await only.Closed.WaitAsync(Patience);
        Assert.Equal("QUIT", only.Lines[^1]);
    }

    [Fact]
    public async Task ATransactionLeftOpenIsResetBeforeTheConnectionServesAnotherSession()
    {
        await using var sink = new DownstreamSink();
        var ctx = Context(At(sink));
        var first = new DownstreamLease(ctx);
        var client = await first.AcquireAsync(CancellationToken.None);
        var mail = client.MailAsync("<alice@example.org>");
        await client.FlushAsync();
        Assert.Equal(250, (await mail).Code);
        await first.DropAsync();   // the client went away after MAIL

        var second = new DownstreamLease(ctx);
        await DeliverAsync(second);
        await second.DropAsync();
        var connection = Assert.Single(sink.Seen);
        Assert.Equal(["MAIL FROM:<alice@example.org>", "RSET", "MAIL FROM:<alice@example.org>"],
            connection.Lines.Where(l => l is "RSET" || l.StartsWith("MAIL", StringComparison.Ordinal)));
        await ctx.DownstreamPool.CloseAsync();
    }

    [Fact]
    public async Task AConnectionThatSpeaksForOneClientOrIsLoggedInIsNeverShared()
    {
        // After XCLIENT the sink stops offering it, as Postfix does for most clients.
        await using var sink = new DownstreamSink("PIPELINING\r\n250-XCLIENT NAME ADDR HELO\r\n250 AUTH PLAIN") { XClientOnce = true };
        var ctx = Context(At(sink));

        var xclient = new DownstreamLease(ctx);
        var client = await xclient.AcquireAsync(CancellationToken.None);
        Assert.Equal(220, (await client.XClientAsync([new("ADDR", "192.0.2.7")], null))!.Code);
        Assert.Empty(client.Capabilities.XClient);
        await xclient.DropAsync();
        await sink.Seen[0].Closed.WaitAsync(Patience);
        Assert.Equal("QUIT", sink.Seen[0].Lines[^1]);

        var auth = new DownstreamLease(ctx);
        client = await auth.AcquireAsync(CancellationToken.None);
        Assert.Equal(235, (await client.SendCommandAsync("AUTH PLAIN AGJvYgBzZWNyZXQ=")).Code);
        auth.MarkLoggedIn();
        await DeliverAsync(auth);   // the session keeps its logged-in connection after delivery
        Assert.Same(client, auth.Usable);
        await auth.DropAsync();
        await sink.Seen[1].Closed.WaitAsync(Patience);
        Assert.Equal("QUIT", sink.Seen[1].Lines[^1]);

        Assert.Equal(0, ctx.DownstreamPool.Open);
        await DeliverAsync(new DownstreamLease(ctx));
        Assert.Equal(3, ctx.DownstreamPool.Connects);
        await ctx.DownstreamPool.CloseAsync();
    }

    [Fact]
    public async Task AConnectionThatStillOffersXClientAfterItIsSharedToBeToldAboutTheNextClient()
    {
        await using var sink = new DownstreamSink("PIPELINING\r\n250 XCLIENT NAME ADDR HELO");
        var ctx = Context(At(sink));

        var first = new DownstreamLease(ctx);
        var client = await first.AcquireAsync(CancellationToken.None);
        Assert.Equal(220, (await client.XClientAsync([new("ADDR", "192.0.2.7")], null))!.Code);
        Assert.NotEmpty(client.Capabilities.XClient);
        await DeliverAsync(first);   // given back after delivery
        Assert.Null(first.Usable);
        Assert.Equal(1, ctx.DownstreamPool.IdleCount);

        var second = new DownstreamLease(ctx);
        var again = await second.AcquireAsync(CancellationToken.None);
        Assert.Same(client, again);
        Assert.Equal(220, (await again.XClientAsync([new("ADDR", "192.0.2.8")], null))!.Code);
        await DeliverAsync(second);
        Assert.Equal(1, ctx.DownstreamPool.Connects);
        Assert.Equal(2, sink.Seen[0].Lines.Count(l => l.StartsWith("XCLIENT", StringComparison.Ordinal)));
        await ctx.DownstreamPool.CloseAsync();
    }

    // A session inside DATA parks its connection (MessagePipeline.OpenContent); past the limit
    // another session takes it, with RSET first, and the first one finds it gone when its message
    // is ready (EnvelopeRelay replays the envelope then).
    [Fact]
    public async Task PastTheLimitAConnectionParkedInsideDataIsLentAfterRset()
    {
        await using var sink = new DownstreamSink();
        var ctx = Context(At(sink), "smtp_server_connections = 1");
        var owner = new DownstreamLease(ctx);
        var client = await owner.AcquireAsync(CancellationToken.None);
        var mail = client.MailAsync("<alice@example.org>");
        var rcpt = client.RcptAsync("<bob@example.net>");
        await client.FlushAsync();
        Assert.Equal(250, (await rcpt).Code);
        owner.Park();
        Assert.Equal(1, ctx.DownstreamPool.ParkedCount);

        var other = new DownstreamLease(ctx);
        Assert.Same(client, await other.AcquireAsync(CancellationToken.None).AsTask().WaitAsync(Patience));
        Assert.Equal(["RCPT TO:<bob@example.net>", "RSET"], sink.Seen[0].Lines.TakeLast(2));
        Assert.True(client.IsBetweenTransactions);
        await DeliverAsync(other);
        Assert.Equal(1, ctx.DownstreamPool.Lent);
        Assert.Equal(0, ctx.DownstreamPool.ParkedCount);

        // The owner's message is ready: its connection is gone, the next one is the pool's again.
        Assert.Null(owner.Usable);
        Assert.True(owner.WasLent);
        Assert.Same(client, await owner.ReplaceAsync(CancellationToken.None));
        Assert.False(owner.WasLent);
        Assert.Equal(1, ctx.DownstreamPool.Connects);
        await owner.DropAsync();
        await ctx.DownstreamPool.CloseAsync();
    }

    [Fact]
    public async Task ASessionWaitingPastTheLimitIsHandedAConnectionAsSoonAsItsOwnerParksIt()
    {
        await using var sink = new DownstreamSink();
        var ctx = Context(At(sink), "smtp_server_connections = 1");
        var owner = new DownstreamLease(ctx);
        var client = await owner.AcquireAsync(CancellationToken.None);
        await MailOnlyAsync(client);

        var waiting = new DownstreamLease(ctx).AcquireAsync(CancellationToken.None).AsTask();
        Assert.False(waiting.IsCompleted);
        owner.Park();
        Assert.Same(client, await waiting.WaitAsync(Patience));
        Assert.Equal(0, ctx.DownstreamPool.ParkedCount);
        Assert.Equal("RSET", sink.Seen[0].Lines[^1]);
        Assert.Null(owner.Usable);
        await ctx.DownstreamPool.CloseAsync();
    }

    [Fact]
    public async Task AParkedConnectionNobodyNeededIsStillTheSessionsAndIsNotReset()
    {
        await using var sink = new DownstreamSink();
        var ctx = Context(At(sink), "smtp_server_connections = 1");
        var owner = new DownstreamLease(ctx);
        var client = await owner.AcquireAsync(CancellationToken.None);
        await MailOnlyAsync(client);
        owner.Park();
        await owner.FlushAsync(CancellationToken.None);   // a flush leaves it parked
        Assert.Equal(1, ctx.DownstreamPool.ParkedCount);

        Assert.Same(client, owner.Usable);
        Assert.False(owner.WasLent);
        Assert.Equal(0, ctx.DownstreamPool.ParkedCount);
        Assert.DoesNotContain("RSET", sink.Seen[0].Lines);
        await owner.DropAsync();
        await ctx.DownstreamPool.CloseAsync();
    }

    // Lent after XCLIENT when the server no longer offers it: the connection speaks for the
    // owner's client, so it is closed and the slot connects afresh for the other session.
    [Fact]
    public async Task ALentConnectionThatSpeaksForAnotherClientIsClosedAndItsSlotConnectsAfresh()
    {
        await using var sink = new DownstreamSink("PIPELINING\r\n250 XCLIENT NAME ADDR HELO") { XClientOnce = true };
        var ctx = Context(At(sink), "smtp_server_connections = 1");
        var owner = new DownstreamLease(ctx);
        var client = await owner.AcquireAsync(CancellationToken.None);
        Assert.Equal(220, (await client.XClientAsync([new("ADDR", "192.0.2.7")], null))!.Code);
        await MailOnlyAsync(client);
        owner.Park();

        var other = new DownstreamLease(ctx);
        var fresh = await other.AcquireAsync(CancellationToken.None).AsTask().WaitAsync(Patience);
        Assert.NotSame(client, fresh);
        Assert.Null(fresh.XClientAttributes);
        await sink.Seen[0].Closed.WaitAsync(Patience);
        Assert.Equal(2, ctx.DownstreamPool.Connects);
        Assert.Equal(1, ctx.DownstreamPool.Open);
        await DeliverAsync(other);
        Assert.Null(owner.Usable);
        await ctx.DownstreamPool.CloseAsync();
    }

    [Fact]
    public async Task PastTheLimitASessionWaitsForAConnectionGivenBack()
    {
        await using var sink = new DownstreamSink();
        var ctx = Context(At(sink), "smtp_server_connections = 2");
        var one = new DownstreamLease(ctx);
        var two = new DownstreamLease(ctx);
        var first = await one.AcquireAsync(CancellationToken.None);
        await two.AcquireAsync(CancellationToken.None);

        var three = new DownstreamLease(ctx);
        var waiting = three.AcquireAsync(CancellationToken.None).AsTask();
        Assert.False(waiting.IsCompleted);   // both connections are rented: nothing to hand out
        await DeliverAsync(one);             // one's transaction ends: its connection goes to three

        Assert.Same(first, await waiting.WaitAsync(Patience));
        Assert.Equal(2, ctx.DownstreamPool.Connects);
        Assert.Equal(2, sink.Seen.Count);
        await DeliverAsync(three);
        await two.DropAsync();
        await three.DropAsync();
        await ctx.DownstreamPool.CloseAsync();
    }

    [Fact]
    public void ThePoolTakes100ConnectionsByDefaultAndWithZeroAsManyAsTheGatewayTakesClients()
    {
        Assert.Equal(100, Context("127.0.0.1").DownstreamPool.Limit);   // Postfix's default_process_limit
        Assert.Equal(3, Context("127.0.0.1", "smtp_server_connections = 0\n[limits]\nmax_connections = 3").DownstreamPool.Limit);
        var unbounded = Context("127.0.0.1", "smtp_server_connections = 0");
        Assert.Equal(unbounded.Config.Limits.MaxConnections, unbounded.DownstreamPool.Limit);
        Assert.Equal(int.MaxValue, Context("127.0.0.1", "smtp_server_connections = 0\n[limits]\nmax_connections = 0").DownstreamPool.Limit);
        Assert.Equal(7, Context("127.0.0.1", "smtp_server_connections = 7").DownstreamPool.Limit);
    }

    [Fact]
    public async Task ASessionThatFindsEveryConnectionBusyUntilTheConnectTimeoutGetsDownstreamException()
    {
        await using var sink = new DownstreamSink();
        var ctx = Context(At(sink), "smtp_server_connections = 1\nsmtp_server_timeout = 1s");
        var holder = new DownstreamLease(ctx);
        await holder.AcquireAsync(CancellationToken.None);

        var e = await Assert.ThrowsAsync<DownstreamException>(() => new DownstreamLease(ctx).AcquireAsync(CancellationToken.None).AsTask());
        Assert.Contains("smtp_server_connections", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, ctx.DownstreamPool.Open);
        await holder.DropAsync();
        await ctx.DownstreamPool.CloseAsync();
    }

    // probe_after 0: every connection taken from the pool answers NOOP first. The server closed
    // the idle connection (seen at once, or at the probe), or answers the probe with 421.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task APooledConnectionThatIsGoneOrFailsTheProbeIsReplacedWithoutAnErrorForTheClient(bool closedWhileIdle)
    {
        await using var sink = closedWhileIdle
            ? new DownstreamSink { CloseAfterMessage = true }
            : new DownstreamSink { NoopReply = "421 4.4.2 sink.test Error: timeout exceeded" };
        var ctx = Context(At(sink), timings: DownstreamTimings.Default with { ProbeAfter = TimeSpan.Zero });
        var first = new DownstreamLease(ctx);
        await DeliverAsync(first);
        await first.DropAsync();

        await DeliverAsync(new DownstreamLease(ctx));
        Assert.Equal(2, sink.Messages);
        Assert.Equal(2, ctx.DownstreamPool.Connects);
        if (!closedWhileIdle) Assert.Equal("NOOP", sink.Seen[0].Lines[^1]);
        await ctx.DownstreamPool.CloseAsync();
    }

    [Fact]
    public async Task AReloadThatChangesTheServerEmptiesThePoolAndOneThatDoesNotKeepsIt()
    {
        await using var sink = new DownstreamSink();
        await using var other = new DownstreamSink();
        var ctx = Context(At(sink));
        var lease = new DownstreamLease(ctx);
        await DeliverAsync(lease);
        await lease.DropAsync();

        var same = ctx.WithConfig(ctx.Config with { Scan = ctx.Config.Scan with { Timeout = TimeSpan.FromSeconds(7) } });
        Assert.Same(ctx.DownstreamPool, same.DownstreamPool);
        Assert.Equal(1, same.DownstreamPool.IdleCount);

        var moved = same.WithConfig(ctx.Config with { General = ctx.Config.General with { SmtpServerAddresses = [], SmtpServerPort = other.Port } });
        Assert.NotSame(ctx.DownstreamPool, moved.DownstreamPool);
        await sink.Seen[0].Closed.WaitAsync(Patience);
        Assert.Equal("QUIT", sink.Seen[0].Lines[^1]);
        await DeliverAsync(new DownstreamLease(moved));
        Assert.Equal(1, other.Messages);
        await moved.DownstreamPool.CloseAsync();
    }

    [Fact]
    public async Task TheSecondServerReceivesTheMailWhenTheFirstRefusesTheConnection()
    {
        await using var sink = new DownstreamSink();
        var ctx = Context($"127.0.0.1:{DownstreamSink.RefusingPort()}, {At(sink)}");

        // The queue's call shape: the connector with the context's options.
        await using var client = await ctx.Downstream.ConnectAsync(ctx.DownstreamOptions, CancellationToken.None);
        Assert.EndsWith(":" + sink.Port.ToString(CultureInfo.InvariantCulture), client.RemoteDescription, StringComparison.Ordinal);
        var mail = client.MailAsync("<alice@example.org>");
        var rcpt = client.RcptAsync("<bob@example.net>");
        await client.FlushAsync();
        Assert.Equal(250, (await mail).Code);
        Assert.Equal(250, (await rcpt).Code);
        Assert.Equal(250, (await client.SendMessageAsync(default, new BytesContent("Subject: t\r\n\r\nbody\r\n"u8.ToArray()))).Code);
        Assert.Equal(1, sink.Messages);
    }

    [Fact]
    public async Task AServerThatGreetsWith421IsPassedOverInLineDelivery()
    {
        await using var busy = new DownstreamSink(greeting: "421 4.3.2 busy.test Service not available");
        await using var sink = new DownstreamSink();
        var ctx = Context($"{At(busy)}, {At(sink)}");
        var lease = new DownstreamLease(ctx);
        await DeliverAsync(lease);
        await lease.DropAsync();
        Assert.Equal(1, sink.Messages);
        Assert.Single(busy.Seen);
        await ctx.DownstreamPool.CloseAsync();
    }

    [Fact]
    public async Task WhenEveryServerFailsTheErrorNamesEachOfThem()
    {
        int refusing = DownstreamSink.RefusingPort();
        await using var busy = new DownstreamSink(greeting: "421 4.3.2 busy.test Service not available");
        var ctx = Context($"127.0.0.1:{refusing}, {At(busy)}");
        var e = await Assert.ThrowsAsync<DownstreamException>(() => new DownstreamLease(ctx).AcquireAsync(CancellationToken.None).AsTask());
        Assert.Contains($"127.0.0.1:{refusing}", e.Message, StringComparison.Ordinal);
        Assert.Contains("421 4.3.2 busy.test", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, ctx.DownstreamPool.Open);
    }

    private sealed class NoScanner : IMessageScanner
    {
        public string Description => "none";

        public bool TryStart(MessageScanJob job, TimeSpan timeout, out ScanJob running) =>
            throw new InvalidOperationException("these tests scan nothing");
    }
}
