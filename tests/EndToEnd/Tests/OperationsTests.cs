using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// What an admin runs into: the first start before freshclam, the metrics (Prometheus text format,
// process_* families, detection classes, refusal counters) and the log formats.
public sealed partial class OperationsTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);
    private static readonly IPAddress Untrusted = IPAddress.Parse("127.0.0.2");

    [Fact]
    public async Task First_start_without_signatures_defers_mail_and_becomes_ready_when_they_arrive()
    {
        await using var notify = new NotifyReceiver();
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, launch: new GatewayLaunch
        {
            BeforeStart = config =>
            {
                foreach (var file in Directory.GetFiles(config.DatabaseFolder)) File.Delete(file);
            },
            Environment = new Dictionary<string, string> { ["NOTIFY_SOCKET"] = notify.SocketVariable },
        });

        await notify.WaitForAsync(m => m.Fields.ContainsKey("EXTEND_TIMEOUT_USEC"), "EXTEND_TIMEOUT_USEC while waiting for signatures");
        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port))
        {
            Assert.Equal(220, client.Banner.Code);
            await client.EhloAsync();
            var mail = await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>");
            Assert.True(mail.Code == 451 && mail.ToString().Contains("4.3.0") && mail.ToString().Contains("signatures are not loaded yet"), mail.ToString());
            await client.CommandAsync("QUIT");
        }

        var line = await gateway.WaitForLogRecordAsync(r => r.Get("reason") == "signatures-not-loaded");
        Assert.Equal("tempfail", line["action"]);
        Assert.Single(gateway.Stderr.Snapshot(), l => l.Contains("clamav-freshclam") && l.Contains(".cvd, .cld or .cud"));
        Assert.DoesNotContain(notify.Messages.Snapshot(), m => m.Ready);
        Assert.Empty(downstream.Messages.Snapshot());

        await TestSignatures.WriteAsync(gateway.Config.DatabaseFolder);
        var ready = await notify.WaitForAsync(m => m.Ready, "READY=1 once the signatures are loaded");
        Assert.Contains("signatures", ready.Status);
        Assert.Equal(250, (await Control.SendAsync(gateway, TestMessages.Plain("clean after first start", "hello"))).Code);
        Assert.Equal(554, (await Control.SendAsync(gateway, Control.Eicar("infected after first start"))).Code);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Metrics_follow_the_text_format_and_count_classes_refusals_and_the_process()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c
            .Set("relay", "trusted_networks", "127.0.0.1/32")
            .Set("relay", "local_domains", "dest.test")
            .Set("limits", "max_connections_per_ip", "1")
            .Set("log", "folder", Path.Combine(c.Root, "logs")));

        Assert.Equal(250, (await Control.SendAsync(gateway, TestMessages.Plain("clean", "hello"))).Code);
        Assert.Equal(554, (await Control.SendAsync(gateway, Control.Eicar("virus"))).Code);
        var banned = await TestMessages.WireBytesOfAsync(TestMessages.WithAttachment("banned", "see attached", "evil.exe", "MZ harmless"u8.ToArray()));
        var bannedReply = await Control.SendAsync(gateway, banned);
        Assert.True(bannedReply.Code == 554 && bannedReply.ToString().Contains("Banned."), bannedReply.ToString());

        // An untrusted client relaying to a foreign domain, then over the per-address limit.
        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: Untrusted))
        {
            Assert.Equal(220, client.Banner.Code);
            await client.EhloAsync();
            Assert.Equal(250, (await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>")).Code);
            var relay = await client.CommandAsync("RCPT TO:<someone@elsewhere.test>");
            Assert.True(relay.Code / 100 == 5, relay.ToString());
            await using var second = await RawSmtpClient.ConnectAsync(gateway.Port, from: Untrusted);
            Assert.Equal(421, second.Banner.Code);
        }

        var limited = await gateway.WaitForLogRecordAsync(r => r.Get("reason") == "connection-limit");
        Assert.Equal("127.0.0.2", limited["client"]);

        var response = await Control.GetAsync(gateway.Config.StatusPort, "/metrics");
        var metrics = response[(response.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];
        var samples = CheckTextFormat(metrics);
        // A signature from a custom database carries .UNOFFICIAL: its class is unofficial.
        Assert.Equal(1, samples["portcullis_detections_total{class=\"unofficial\",action=\"rejected\"}"]);
        Assert.Equal(1, samples["portcullis_detections_total{class=\"banned\",action=\"rejected\"}"]);
        Assert.Equal(1, samples["portcullis_relay_refusals_total"]);
        Assert.Equal(1, samples["portcullis_connection_limit_refusals_total{limit=\"per_ip\"}"]);
        Assert.Equal(0, samples["portcullis_connection_limit_refusals_total{limit=\"total\"}"]);
        Assert.Equal(0, samples["portcullis_auth_failures_total"]);
        Assert.Equal(0, samples["portcullis_log_lines_dropped_total"]);
        Assert.Equal(2, samples["portcullis_quarantine_entries"]); // copy = yes: both detections, one entry each
        Assert.InRange(samples["process_resident_memory_bytes"], 1 << 20, 4L << 30);
        Assert.InRange(samples["process_open_fds"], 4, 100_000);
        Assert.True(samples["process_cpu_seconds_total"] > 0);
        var started = DateTimeOffset.FromUnixTimeMilliseconds((long)(samples["process_start_time_seconds"] * 1000));
        Assert.InRange(started, DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddSeconds(1));

        // Daemon lines are key=value with a level and no <N> prefix (stderr is not the journal here).
        Assert.All(gateway.Stderr.Snapshot().Where(l => !l.StartsWith("LibClamAV", StringComparison.Ordinal)), l => Assert.Matches("^level=(info|warn|error) msg=", l));
        // [log] folder lines start with an RFC 3339 time.
        var logFile = Directory.GetFiles(Path.Combine(gateway.Config.Root, "logs")).Single();
        await gateway.StopAsync();
        var fileLines = File.ReadAllLines(logFile);
        Assert.NotEmpty(fileLines);
        Assert.All(fileLines, l => Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d session=", l));
        Assert.Contains(fileLines, l => l.Contains("reason=connection-limit"));
    }

    [Fact]
    public async Task Check_config_warns_about_an_empty_database_folder_port_25_without_starttls_and_the_service_user()
    {
        var config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), GatewayIni.FreePort());
        try
        {
            config.Set("general", "interfaces", "0.0.0.0:25");
            await config.WriteAsync();
            foreach (var file in Directory.GetFiles(config.DatabaseFolder)) File.Delete(file);

            var result = await PortcullisBinary.RunAsync("check-config", "--config", config.FilePath);
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains($"warning: [scan] database_folder {config.DatabaseFolder} has no virus signatures yet", result.Stderr);
            Assert.Contains("clamav-freshclam", result.Stderr);
            Assert.Contains("warning: [general] interfaces 0.0.0.0:25 is port 25 without STARTTLS", result.Stderr);
            // Without the package installed there is no service user: a warning, not an error.
            if (!File.ReadAllLines("/etc/passwd").Any(l => l.StartsWith("portcullis:", StringComparison.Ordinal)))
            {
                Assert.Contains("warning: service user portcullis does not exist", result.Stderr);
            }
        }
        finally
        {
            Directory.Delete(config.Root, recursive: true);
        }
    }

    [Fact]
    public async Task Syslog_prefixes_appear_only_when_stderr_is_the_journal_stream()
    {
        var binary = PortcullisBinary.Require();
        var missing = Path.Combine(Path.GetTempPath(), $"portcullis-missing-{Guid.NewGuid():N}.ini");
        // $JOURNAL_STREAM names the pipe that is the gateway's stderr (what systemd does) ...
        var journal = await RunShellAsync("export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec \"$0\" run --config \"$1\"", binary, missing);
        Assert.Matches("^<3>level=error msg=\".*" + Regex.Escape(missing), journal);
        // ... or some other stream (a redirect keeps the variable but changes descriptor 2).
        var other = await RunShellAsync("export JOURNAL_STREAM=1:1; exec \"$0\" run --config \"$1\"", binary, missing);
        Assert.Matches("^level=error msg=\".*" + Regex.Escape(missing), other);
    }

    private static async Task<string> RunShellAsync(string script, params string[] arguments)
    {
        var start = new System.Diagnostics.ProcessStartInfo("sh") { RedirectStandardError = true, RedirectStandardOutput = true };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(script);
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        using var process = System.Diagnostics.Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.NotEqual(0, process.ExitCode);
        return await stderr;
    }

    // The text exposition format's rules the gateway relies on: HELP and TYPE once per family
    // before its samples, each family's samples together, valid names and labels, no duplicate
    // series, counters named *_total, numeric values. Returns series → value.
    private static Dictionary<string, double> CheckTextFormat(string text)
    {
        Assert.EndsWith("\n", text);
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        var families = new HashSet<string>(StringComparer.Ordinal);
        string? family = null;
        string? type = null;
        foreach (var line in text[..^1].Split('\n'))
        {
            if (line.StartsWith("# HELP ", StringComparison.Ordinal))
            {
                family = line.Split(' ')[2];
                Assert.True(families.Add(family), $"family {family} appears twice");
                Assert.Matches(MetricName(), family);
                type = null;
                continue;
            }

            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                Assert.Equal(family, parts[2]);
                Assert.Null(type);
                type = parts[3];
                Assert.Contains(type, new[] { "counter", "gauge", "histogram" });
                if (type == "counter") Assert.EndsWith("_total", family);
                continue;
            }

            var match = Sample().Match(line);
            Assert.True(match.Success, $"not a sample line: {line}");
            var name = match.Groups["name"].Value;
            Assert.NotNull(type);
            var allowed = type == "histogram" ? new[] { family + "_bucket", family + "_sum", family + "_count" } : new[] { family };
            Assert.Contains(name, allowed);
            var series = name + match.Groups["labels"].Value;
            Assert.True(double.TryParse(match.Groups["value"].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var value), line);
            Assert.True(samples.TryAdd(series, value), $"series {series} appears twice");
        }

        foreach (var required in new[] { "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds",
                     "portcullis_detections_total", "portcullis_relay_refusals_total", "portcullis_auth_failures_total",
                     "portcullis_connection_limit_refusals_total", "portcullis_quarantine_entries" })
        {
            Assert.Contains(required, families);
        }

        return samples;
    }

    [GeneratedRegex("^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
    private static partial Regex MetricName();

    [GeneratedRegex("""^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?<labels>\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (?<value>\S+)$""")]
    private static partial Regex Sample();
}
