using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// [status] listen: /metrics in Prometheus text format, the HTML page, GET only, bounded
// requests; `portcullis status` over the control socket; the definitions-age warning.
public sealed class StatusTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Metrics_and_page_count_messages_and_show_the_last_detection()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        Assert.Equal(250, (await Control.SendAsync(gateway, TestMessages.Plain("clean", "hello"))).Code);
        Assert.Equal(554, (await Control.SendAsync(gateway, Control.Eicar("infected"))).Code);
        await gateway.WaitForLogRecordAsync(r => r["verdict"] == "infected");

        var metrics = await Control.GetAsync(gateway.Config.StatusPort, "/metrics");
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", metrics);
        Assert.Contains("Content-Type: text/plain; version=0.0.4", metrics);
        Assert.Contains("portcullis_messages_total{verdict=\"clean\",action=\"delivered\"} 1\n", metrics);
        Assert.Contains("portcullis_messages_total{verdict=\"infected\",action=\"rejected\"} 1\n", metrics);
        Assert.Contains("portcullis_scan_duration_seconds_count 2\n", metrics);
        Assert.Contains("portcullis_message_duration_seconds_bucket{le=\"+Inf\"} 2\n", metrics);
        Assert.Contains("portcullis_connections_total ", metrics);
        Assert.Contains("portcullis_signatures 2\n", metrics);
        Assert.Contains("portcullis_database_info{version=\"custom\"} 1\n", metrics);
        Assert.Contains("portcullis_build_info{version=", metrics);
        Assert.Contains("portcullis_scanner_queue_depth 0\n", metrics);

        var page = await Control.GetAsync(gateway.Config.StatusPort, "/");
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", page);
        Assert.Contains("Portcullis.Test.EICAR", page);
        Assert.Contains(TestMessages.Sender, page);

        var status = await Control.StatusAsync(gateway);
        Assert.True(status.ExitCode == 0, status.ToString());
        Assert.Contains("signatures: 2 (database custom)", status.Stdout);
        Assert.Contains("detected:", status.Stdout);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Only_GET_is_served_and_requests_are_bounded()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var port = gateway.Config.StatusPort;

        Assert.StartsWith("HTTP/1.1 405 ", await Control.HttpAsync(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
        Assert.StartsWith("HTTP/1.1 404 ", await Control.GetAsync(port, "/nothing"));
        Assert.StartsWith("HTTP/1.1 400 ", await Control.HttpAsync(port, "nonsense\r\n\r\n"));
        Assert.StartsWith("HTTP/1.1 431 ", await Control.HttpAsync(port, "GET / HTTP/1.1\r\nX-Big: " + new string('a', 10_000) + "\r\n\r\n"));
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Old_definitions_are_warned_about_in_the_log_status_and_metrics()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "max_definitions_age", "2d"),
            new GatewayLaunch
            {
                BeforeStart = config =>
                {
                    foreach (var file in Directory.GetFiles(config.DatabaseFolder))
                    {
                        File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddDays(-5));
                    }
                },
            });

        await gateway.Stderr.WaitForAsync(l => l.Contains("signatures are outdated") && l.Contains("5d"), Wait, "the outdated warning");
        Assert.Contains("OUTDATED", (await Control.StatusAsync(gateway)).Stdout);
        Assert.Contains("OUTDATED", await Control.GetAsync(gateway.Config.StatusPort, "/"));
        Assert.Contains("portcullis_database_outdated 1\n", await Control.GetAsync(gateway.Config.StatusPort, "/metrics"));
        await gateway.StopAsync();
    }
}
