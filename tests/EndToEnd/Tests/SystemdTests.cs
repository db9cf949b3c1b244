using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// The systemd contract: sd_notify over $NOTIFY_SOCKET (READY, RELOADING with MONOTONIC_USEC,
// READY, STOPPING), WATCHDOG=1 only while a canary scan gets through the scanner pool, and
// listening sockets passed with LISTEN_FDS.
public sealed class SystemdTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Notifies_ready_reloading_ready_on_sighup_and_reload_then_stopping(bool abstractSocket)
    {
        await using var notify = new NotifyReceiver(abstractSocket);
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream,
            launch: new GatewayLaunch { Environment = new Dictionary<string, string> { ["NOTIFY_SOCKET"] = notify.SocketVariable } });

        var ready = await notify.WaitForAsync(m => m.Ready, "READY=1");
        Assert.Contains("signatures", ready.Status);

        gateway.Signal(GatewayProcess.SIGHUP);
        var reloading = await notify.WaitForAsync(m => m.Reloading, "RELOADING=1 after SIGHUP");
        Assert.True(long.TryParse(reloading.Fields["MONOTONIC_USEC"], out var usec) && usec > 0, reloading.ToString());
        await notify.WaitForAsync(m => m.Ready, "READY=1 after the SIGHUP reload", after: notify.Messages.Snapshot().ToList().IndexOf(reloading) + 1);

        var before = notify.Messages.Count;
        var reload = await Control.ReloadAsync(gateway);
        Assert.True(reload.ExitCode == 0, reload.ToString());
        Assert.Contains("signatures", reload.Stdout);
        var second = await notify.WaitForAsync(m => m.Reloading, "RELOADING=1 after portcullis reload", after: before);
        Assert.True(long.Parse(second.Fields["MONOTONIC_USEC"]) > usec);

        gateway.Signal(GatewayProcess.SIGTERM);
        Assert.Equal(0, await gateway.WaitForExitAsync(Wait));
        await notify.WaitForAsync(m => m.Stopping, "STOPPING=1");

        var sequence = notify.Messages.Snapshot().Where(m => m.Kind is not ("STATUS" or "WATCHDOG")).Select(m => m.Kind).ToArray();
        Assert.Equal(["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"], sequence);
    }

    [Fact]
    public async Task Watchdog_pings_stop_while_the_scanner_is_wedged_and_resume_after()
    {
        // PORTCULLIS_TEST_WEDGE_SCANNER: canary scans block inside the engine while this file exists.
        var wedge = Path.Combine(Path.GetTempPath(), $"portcullis-wedge-{Guid.NewGuid():N}");
        try
        {
            await using var notify = new NotifyReceiver();
            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream,
                config => config.Set("scan", "timeout", "2s").Set("scan", "scanner_threads", "1"),
                launch: new GatewayLaunch
                {
                    Environment = new Dictionary<string, string>
                    {
                        ["NOTIFY_SOCKET"] = notify.SocketVariable,
                        ["WATCHDOG_USEC"] = "1000000",
                        ["PORTCULLIS_TEST_WEDGE_SCANNER"] = wedge,
                    },
                });

            await notify.WaitForAsync(m => m.Ready, "READY=1");
            await notify.Messages.WaitUntilAsync(all => all.Count(m => m.Watchdog) >= 2, Wait, "two WATCHDOG=1 pings");

            await File.WriteAllTextAsync(wedge, "");
            var wedged = await notify.WaitForAsync(IsWedged, "STATUS=WEDGED once the canary is stuck", after: notify.Messages.Count);
            var from = notify.Messages.Snapshot().ToList().IndexOf(wedged);
            // Each watchdog tick (every 0.5s) repeats the WEDGED status: three more ticks, no ping among them.
            var seen = await notify.Messages.WaitUntilAsync(all => all.Skip(from + 1).Count(IsWedged) >= 3, Wait, "three more WEDGED ticks");
            Assert.DoesNotContain(seen.Skip(from), m => m.Watchdog);
            await gateway.Stderr.WaitForAsync(l => l.Contains("withholding WATCHDOG=1"), Wait, "the watchdog log line");

            File.Delete(wedge);
            var resumed = notify.Messages.Count;
            await notify.WaitForAsync(m => m.Watchdog, "WATCHDOG=1 again once the canary got through", after: resumed);
            await gateway.StopAsync();
        }
        finally
        {
            File.Delete(wedge);
        }
    }

    private static bool IsWedged(NotifyMessage m) => m.Status?.StartsWith("WEDGED", StringComparison.Ordinal) == true;

    [Fact]
    public async Task Uses_the_socket_passed_with_LISTEN_FDS_for_the_matching_interface()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, launch: new GatewayLaunch
        {
            Wrapper = config => ["systemd-socket-activate", "-l", $"127.0.0.1:{config.ListenPort}", "--fdname=smtp"],
        });

        // The gateway could not have bound the port itself: systemd-socket-activate holds it.
        await gateway.Stderr.WaitForAsync(l => l.Contains($"127.0.0.1:{gateway.Port} uses descriptor 3 (smtp)"), Wait, "the socket activation log line");
        var reply = await Control.SendAsync(gateway, TestMessages.Plain("through a passed socket", "hello"));
        Assert.Equal(250, reply.Code);
        await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message");
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_passed_socket_that_matches_no_interface_is_used_as_it_is()
    {
        var passedPort = GatewayIni.FreePort();
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, launch: new GatewayLaunch
        {
            // The first socket is the gateway's own interface; the second matches no entry.
            Wrapper = config => ["systemd-socket-activate", "-l", $"127.0.0.1:{config.ListenPort}", "-l", $"127.0.0.1:{passedPort}"],
        });

        await gateway.Stderr.WaitForAsync(l => l.Contains($"127.0.0.1:{passedPort} matches no [general] interfaces entry"), Wait, "the unmatched-socket log line");
        await using var client = await RawSmtpClient.ConnectAsync(passedPort);
        Assert.Equal(220, client.Banner.Code);
        var reply = await RawTransaction.SendAsync(client, TestMessages.Plain("through the extra socket", "hello"));
        Assert.Equal(250, reply.Code);
        await client.CommandAsync("QUIT");
        await gateway.StopAsync();
    }
}
