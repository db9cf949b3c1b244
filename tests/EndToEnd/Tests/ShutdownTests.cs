using System.Net;
using System.Net.Sockets;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// SIGTERM: stop accepting, answer idle sessions 421, let open transactions finish within
// [general] shutdown_timeout, exit 0.
public sealed class ShutdownTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Sigterm_lets_an_open_transaction_finish_and_answers_idle_sessions_421()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("general", "shutdown_timeout", "30s"));

        await using var busy = await RawSmtpClient.ConnectAsync(gateway.Port);
        await RawTransaction.BeginAsync(busy);
        Assert.Equal(354, (await busy.CommandAsync("DATA")).Code);
        var content = SmtpBytes.DataPayload(TestMessages.Plain("finished during shutdown", "first half", "second half"));
        await busy.SendAsync(content[..20]);

        await using var idle = await RawSmtpClient.ConnectAsync(gateway.Port);
        RawTransaction.ExpectClass(2, await idle.EhloAsync(), "EHLO", idle);

        gateway.Signal(GatewayProcess.SIGTERM);

        // The idle session hears 421 at once; by then the listener is closed.
        var goodbye = await idle.ReadReplyAsync();
        Assert.Equal(421, goodbye.Code);
        Assert.Equal("4.3.2", goodbye.EnhancedCode);
        Assert.Null(await idle.ReadReplyOrCloseAsync());
        await Assert.ThrowsAnyAsync<SocketException>(async () =>
        {
            using var late = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await late.ConnectAsync(IPAddress.Loopback, gateway.Port);
        });

        // The open transaction finishes, is delivered, and only then is the session closed.
        await busy.SendAsync(content[20..]);
        var accepted = await busy.ReadReplyAsync();
        Assert.Equal(250, accepted.Code);
        Assert.Contains(downstream.QueueId, accepted.Text);
        var after = await busy.ReadReplyOrCloseAsync();
        Assert.True(after is null || after.Code == 421, $"after the transaction: {after}");
        await downstream.Messages.WaitForCountAsync(1, Wait, "the message finished during shutdown");

        Assert.Equal(0, await gateway.WaitForExitAsync(Wait));
    }

    [Fact]
    public async Task A_transaction_still_open_at_shutdown_timeout_is_cut_and_the_process_exits_0()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("general", "shutdown_timeout", "1s"));

        await using var stalled = await RawSmtpClient.ConnectAsync(gateway.Port);
        await RawTransaction.BeginAsync(stalled);
        Assert.Equal(354, (await stalled.CommandAsync("DATA")).Code);
        await stalled.SendAsync(SmtpBytes.Ascii("Subject: never finished\r\n\r\npart"));

        gateway.Signal(GatewayProcess.SIGTERM);
        var last = await stalled.ReadReplyOrCloseAsync();
        Assert.True(last is null || last.Code == 421, $"at shutdown_timeout: {last}");
        Assert.Equal(0, await gateway.WaitForExitAsync(Wait));
        await gateway.Stderr.WaitForAsync(l => l.Contains("still open after shutdown_timeout"), Wait, "the shutdown_timeout log line");
        Assert.Empty(downstream.Messages.Snapshot());
    }
}
