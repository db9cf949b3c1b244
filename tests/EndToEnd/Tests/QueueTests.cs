using System.Diagnostics;
using System.Text;
using Portcullis.EndToEnd.Harness;
using Portcullis.EndToEnd.Reliability;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Store and forward (issue 10) against the published binary, with a downstream the test takes
// down (it hangs up at the greeting: nothing is reached) and brings back (ClearScript). DSNs
// go to a second test server set as [notification] smtp_server_address.
public sealed class QueueTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private static void Queueing(GatewayIni config, string mode = "fallback") => config
        .Set("queue", "mode", mode)
        .Set("queue", "min_backoff", "1s")
        .Set("queue", "max_backoff", "2s");

    private static GatewayIni NotifyTo(GatewayIni config, TestSmtpServer notify) => config
        .Set("notification", "smtp_server_address", "127.0.0.1")
        .Set("notification", "smtp_server_port", notify.Port.ToString());

    private static string QueueFolder(GatewayIni config) => Path.Combine(config.QueueFolder, "queue");

    // Entries (envelopes) in the queue, and every file there that is not part of one.
    private static (int Entries, string[] Stray) QueueContent(GatewayIni config)
    {
        var folder = QueueFolder(config);
        if (!Directory.Exists(folder)) return (0, []);
        var files = Directory.GetFiles(folder).Select(Path.GetFileName).ToArray();
        var ids = files.Where(f => f!.EndsWith(".json", StringComparison.Ordinal)).Select(f => f![..^5]).ToHashSet();
        var stray = files.Where(f => !ids.Contains(Path.GetFileNameWithoutExtension(f!))).Select(f => f!).ToArray();
        return (ids.Count, stray);
    }

    // Polls the folder (another process's files) until the queue holds no entry.
    private static async Task WaitForEmptyQueueAsync(GatewayIni config, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (QueueContent(config).Entries > 0)
        {
            Assert.True(deadline.Elapsed < Wait, $"the queue still holds {QueueContent(config).Entries} entries: {what}");
            await Task.Delay(100);
        }
    }

    private static async Task<Attempt> SendFromAsync(int port, string id, string sender, params string[] recipients)
    {
        await using var client = await RawSmtpClient.ConnectAsync(port);
        await client.EhloAsync();
        var mail = await client.CommandAsync($"MAIL FROM:<{sender}>");
        if (mail.Code != 250) return new Attempt(id, "MAIL", mail, null);
        foreach (var recipient in recipients.Length == 0 ? [TestMessages.Recipient] : recipients)
        {
            var rcpt = await client.CommandAsync($"RCPT TO:<{recipient}>");
            if (rcpt.Code != 250) return new Attempt(id, "RCPT", rcpt, null);
        }
        var data = await client.CommandAsync("DATA");
        if (data.Code != 354) return new Attempt(id, "DATA", data, null);
        await client.SendAsync(Traffic.Message(id));
        return new Attempt(id, "end of data", await client.CommandAsync("."), null);
    }

    [Fact]
    public async Task Fallback_500_messages_while_the_server_is_down_all_arrive_once_and_unchanged()
    {
        await using var downstream = TestSmtpServer.Start();
        downstream.CloseAt(SmtpStep.Banner);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => Queueing(c));
        var config = gateway.Config;
        var sent = Enumerable.Range(0, 500).Select(i => (Id: $"queued-{i}", Bytes: Traffic.Message($"queued-{i}"))).ToArray();

        var clock = Stopwatch.StartNew();
        var attempts = await Traffic.RunAsync(sent.Length, 8, i => Traffic.SendAsync(gateway.Port, sent[i].Id, sent[i].Bytes));
        var queueing = clock.Elapsed;
        Assert.All(attempts, a => Assert.True(a.Accepted, a.ToString()));
        Assert.Equal(500, QueueContent(config).Entries);
        Assert.Empty(downstream.Messages.Snapshot());

        downstream.ClearScript();
        await downstream.Messages.WaitForCountAsync(1, Wait, "the first queued message");
        clock.Restart();
        await downstream.Messages.WaitForCountAsync(sent.Length, Wait, "every queued message");
        var drain = clock.Elapsed;
        foreach (var (id, bytes) in sent)
        {
            var copies = downstream.Messages.Snapshot().Where(m => Contains(m.Content, $"\r\nSubject: {id}\r\n")).ToList();
            Assert.True(copies.Count == 1, $"{id} arrived {copies.Count} times");
            var added = Delivered.SplitPrepended(copies[0].Content, bytes);
            Assert.Equal(["Received", "X-Virus-Scanned"], added.Select(f => f.Name));
            Assert.Equal($"MAIL FROM:<{TestMessages.Sender}>", copies[0].MailCommand.Split(' ')[0] + " " + copies[0].MailCommand.Split(' ')[1]);
        }
        await WaitForEmptyQueueAsync(config, "after the drain");

        // The same load in-line, the server up: the drain rate is reported against it.
        clock.Restart();
        var inline = await Traffic.RunAsync(sent.Length, 8, i => Traffic.SendAsync(gateway.Port, $"inline-{i}", Traffic.Message($"inline-{i}")));
        var inlineTime = clock.Elapsed;
        Assert.All(inline, a => Assert.True(a.Accepted, a.ToString()));
        Assert.Equal(0, QueueContent(config).Entries);
        output.WriteLine($"queued 500 in {queueing.TotalSeconds:0.0}s ({500 / queueing.TotalSeconds:0} msg/s); drained 500 in {drain.TotalSeconds:0.0}s " +
                         $"({500 / drain.TotalSeconds:0} msg/s, concurrency 4); in-line 500 in {inlineTime.TotalSeconds:0.0}s ({500 / inlineTime.TotalSeconds:0} msg/s, 8 clients); " +
                         $"drain/in-line = {inlineTime.TotalSeconds / drain.TotalSeconds:0.00}");
        await gateway.StopAsync();
        Assert.Equal((0, Array.Empty<string>()), QueueContent(config));
    }

    [Fact]
    public async Task Kill_9_while_queued_and_while_delivering_loses_nothing_and_leaves_nothing_stray()
    {
        await using var downstream = TestSmtpServer.Start();
        downstream.CloseAt(SmtpStep.Banner);
        var config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), downstream.Port);
        Queueing(config, "always");
        config.Set("limits", "memory_threshold", "64K");
        var accepted = new List<string>();

        // 1. Queued, the server away: kill -9.
        await using (var first = await GatewayProcess.StartAsync(output, config, downstream))
        {
            var attempts = await Traffic.RunAsync(30, 4, i => Traffic.SendAsync(config.ListenPort, $"kq-{i}", Traffic.Message($"kq-{i}", i % 3 == 0 ? 100 * 1024 : 0)));
            Assert.All(attempts, a => Assert.True(a.Accepted, a.ToString()));
            accepted.AddRange(attempts.Select(a => a.Id));
            await first.KillAsync();
        }
        Assert.Equal(30, QueueContent(config).Entries);

        // 2. The server back, a stream of new mail, kill -9 while messages are written and delivered.
        downstream.ClearScript();
        var sequence = 0;
        var during = new List<Attempt>();
        await using (var second = await GatewayProcess.StartAsync(output, config, downstream))
        {
            var stream = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
            {
                var mine = new List<Attempt>();
                while (true)
                {
                    var n = Interlocked.Increment(ref sequence);
                    var attempt = await Traffic.SendAsync(config.ListenPort, $"kd-{n}", Traffic.Message($"kd-{n}", n % 3 == 0 ? 100 * 1024 : 0),
                        replyTimeout: TimeSpan.FromSeconds(10));
                    if (attempt.Reply is null && attempt.Step == "connect") return mine;
                    mine.Add(attempt);
                }
            })).ToArray();
            await downstream.Messages.WaitForCountAsync(50, Wait, "50 messages delivered before the kill");
            await second.KillAsync();
            foreach (var attempts in await Task.WhenAll(stream).WaitAsync(Wait)) during.AddRange(attempts);
        }
        accepted.AddRange(during.Where(a => a.Accepted).Select(a => a.Id));

        // 3. Restart: everything acknowledged arrives, at most once more; nothing stray is left.
        await using var third = await GatewayProcess.StartAsync(output, config, downstream);
        await WaitForEmptyQueueAsync(config, "after the restart");
        var lost = accepted.Where(id => Traffic.CopiesOf(downstream, id) == 0).ToList();
        var extra = accepted.Concat(during.Where(a => a.Reply is null).Select(a => a.Id)).Where(id => Traffic.CopiesOf(downstream, id) > 2).ToList();
        var duplicates = accepted.Count(id => Traffic.CopiesOf(downstream, id) == 2);
        output.WriteLine($"acknowledged: {accepted.Count} (30 queued before the first kill, {during.Count(a => a.Accepted)} during the second); " +
                         $"unanswered at the kill: {during.Count(a => a.Reply is null)}; delivered twice (died between the server's 250 and the removal): {duplicates}");
        Assert.True(lost.Count == 0, "acknowledged but never delivered: " + string.Join(", ", lost));
        Assert.True(extra.Count == 0, "delivered more than twice: " + string.Join(", ", extra));
        await third.StopAsync();
        Assert.Equal((0, Array.Empty<string>()), QueueContent(config));
        Assert.False(Directory.Exists(Path.Combine(QueueFolder(config), "corrupt")), "an entry was found corrupt after kill -9");
    }

    [Fact]
    public async Task Each_recipient_keeps_its_own_result_delivered_ones_are_never_sent_again()
    {
        // The test server numbers the recipients it accepted: 2 is whoever follows the first accepted one.
        await using var downstream = TestSmtpServer.Start();
        downstream.Fail(SmtpStep.Rcpt, "450 4.2.1 mailbox busy", rcpt: 2);
        await using var notify = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c =>
        {
            Queueing(NotifyTo(c, notify), "always");
            c.Set("queue", "min_backoff", "3s").Set("queue", "max_backoff", "3s");
        });

        var attempt = await SendFromAsync(gateway.Port, "per-rcpt", TestMessages.Sender, "carol@dest.test", "dave@dest.test", "erin@dest.test");
        Assert.True(attempt.Accepted, attempt.ToString());
        // Attempt 1: carol delivered, dave and erin 450. Attempt 2 (3 s later): dave accepted, erin 550.
        await gateway.Stderr.WaitForAsync(l => l.Contains("deferred: 2 recipient(s) pending", StringComparison.Ordinal), Wait, "the first attempt deferred");
        downstream.ClearScript().Fail(SmtpStep.Rcpt, "550 5.1.1 <erin@dest.test>: unknown user", rcpt: 2);
        var copies = await downstream.Messages.WaitForCountAsync(2, Wait, "carol's copy, then dave's on the retry");
        await WaitForEmptyQueueAsync(gateway.Config, "every recipient settled");

        Assert.Equal(["RCPT TO:<carol@dest.test>"], copies[0].RcptCommands.Select(r => r.Split(' ')[0] + " " + r.Split(' ')[1]));
        Assert.Equal(["RCPT TO:<dave@dest.test>"], copies[1].RcptCommands.Select(r => r.Split(' ')[0] + " " + r.Split(' ')[1]));
        var dsn = (await notify.Messages.WaitForCountAsync(1, Wait, "erin's DSN"))[0];
        var text = Encoding.UTF8.GetString(dsn.Content).Replace("; ", ";");
        Assert.Contains("Final-Recipient: rfc822;erin@dest.test", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Final-Recipient: rfc822;carol@dest.test", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Final-Recipient: rfc822;dave@dest.test", text, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(2, downstream.Messages.Count);
        Assert.Equal(1, notify.Messages.Count);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_5xx_at_delivery_gives_the_sender_one_DSN_and_the_null_sender_none()
    {
        await using var downstream = TestSmtpServer.Start();
        downstream.Fail(SmtpStep.Rcpt, "550 5.1.1 <bob@dest.test>: Recipient address rejected: unknown user");
        await using var notify = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => NotifyTo(c, notify).Set("queue", "mode", "always"));

        var bounce = await SendFromAsync(gateway.Port, "dsn-null", "");
        Assert.True(bounce.Accepted, bounce.ToString());
        var normal = await SendFromAsync(gateway.Port, "dsn-normal", TestMessages.Sender);
        Assert.True(normal.Accepted, normal.ToString());

        var dsn = (await notify.Messages.WaitForCountAsync(1, Wait, "the DSN"))[0];
        await WaitForEmptyQueueAsync(gateway.Config, "both messages bounced");
        var text = Encoding.UTF8.GetString(dsn.Content);
        Assert.Equal("MAIL FROM:<>", dsn.MailCommand.Split(' ')[0] + " " + dsn.MailCommand.Split(' ')[1]);
        Assert.Equal([$"RCPT TO:<{TestMessages.Sender}>"], dsn.RcptCommands.Select(r => r.Split(' ')[0] + " " + r.Split(' ')[1]));
        Assert.Contains("multipart/report", text, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("report-type=delivery-status", text.Replace("\"", ""), StringComparison.OrdinalIgnoreCase);
        Assert.Contains("Final-Recipient: rfc822;" + TestMessages.Recipient, text.Replace("; ", ";"), StringComparison.OrdinalIgnoreCase);
        Assert.Contains("Action: failed", text, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("Status: 5.1.1", text, StringComparison.Ordinal);
        Assert.Contains("Subject: dsn-normal", text, StringComparison.Ordinal);   // the original's headers come back
        var logged = await gateway.WaitForLogRecordAsync(r => r.Get("action") == "queued");
        Assert.StartsWith("queued as ", logged["downstream"], StringComparison.Ordinal);

        // The null sender's bounce is settled too (the queue is empty): still one message out.
        Assert.Equal(1, notify.Messages.Count);
        Assert.Empty(downstream.Messages.Snapshot());
        await gateway.StopAsync();
    }

    // One message queued in fallback mode with the server down, retried every second; returns
    // the gateway and the first report the sender got.
    private async Task<(GatewayProcess Gateway, ReceivedMessage Dsn)> QueueOneWhileDownAsync(TestSmtpServer downstream, TestSmtpServer notify,
        string id, (string Key, string Value) setting)
    {
        downstream.CloseAt(SmtpStep.Banner);
        var gateway = await GatewayProcess.StartAsync(output, downstream, c => NotifyTo(c, notify)
            .Set("queue", "mode", "fallback").Set("queue", "min_backoff", "1s").Set("queue", "max_backoff", "1s").Set("queue", setting.Key, setting.Value));
        try
        {
            var attempt = await SendFromAsync(gateway.Port, id, TestMessages.Sender);
            Assert.True(attempt.Accepted, attempt.ToString());
            return (gateway, (await notify.Messages.WaitForCountAsync(1, Wait, "the DSN"))[0]);
        }
        catch
        {
            await gateway.DisposeAsync();
            throw;
        }
    }

    [Fact]
    public async Task An_expired_lifetime_gives_the_sender_one_DSN()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var notify = TestSmtpServer.Start();
        var (gateway, dsn) = await QueueOneWhileDownAsync(downstream, notify, "expiring", ("max_lifetime", "2s"));
        await using var _ = gateway;
        await WaitForEmptyQueueAsync(gateway.Config, "the expired message removed");

        var text = Encoding.UTF8.GetString(dsn.Content);
        Assert.Contains($"RCPT TO:<{TestMessages.Sender}>", dsn.RcptCommands[0], StringComparison.Ordinal);
        Assert.Contains("Action: failed", text, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("Status: 4.4.7", text, StringComparison.Ordinal);
        Assert.Equal(1, notify.Messages.Count);
        Assert.Empty(downstream.Messages.Snapshot());
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Delay_warning_sends_one_delayed_DSN_and_the_message_stays_queued()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var notify = TestSmtpServer.Start();
        var (gateway, dsn) = await QueueOneWhileDownAsync(downstream, notify, "delayed", ("delay_warning", "1s"));
        await using var _ = gateway;
        var text = Encoding.UTF8.GetString(dsn.Content);
        Assert.Contains("Action: delayed", text, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("Will-Retry-Until:", text, StringComparison.OrdinalIgnoreCase);

        // Two more attempts later it is still queued and no second warning went out.
        var attempts = gateway.Stderr.Snapshot().Count(l => l.Contains("queue: ", StringComparison.Ordinal) && l.Contains(" attempt ", StringComparison.Ordinal));
        await gateway.Stderr.WaitUntilAsync(lines => lines.Count(l => l.Contains("queue: ", StringComparison.Ordinal) && l.Contains(" attempt ", StringComparison.Ordinal)) >= attempts + 2,
            Wait, "two more delivery attempts");
        Assert.Equal(1, notify.Messages.Count);
        Assert.Equal(1, QueueContent(gateway.Config).Entries);

        downstream.ClearScript();
        await downstream.Messages.WaitForCountAsync(1, Wait, "the message once the server is back");
        await WaitForEmptyQueueAsync(gateway.Config, "delivered");
        Assert.Equal(1, notify.Messages.Count);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Past_max_size_new_mail_gets_452_and_nothing_unstored_is_accepted()
    {
        await using var downstream = TestSmtpServer.Start();
        downstream.CloseAt(SmtpStep.Banner);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c =>
        {
            Queueing(c, "always");
            c.Set("queue", "max_size", "8K");
        });

        var first = await Traffic.SendAsync(gateway.Port, "size-1", Traffic.Message("size-1", 5 * 1024));
        var second = await Traffic.SendAsync(gateway.Port, "size-2", Traffic.Message("size-2", 5 * 1024));

        Assert.True(first.Accepted, first.ToString());
        Assert.True(second.Reply is { Code: 452 } && second.Reply.EnhancedCode == "4.3.1", second.ToString());
        await gateway.StopAsync();
        Assert.Equal((1, Array.Empty<string>()), QueueContent(gateway.Config));
    }

    [TmpfsFact]
    public async Task A_full_disk_gets_452_and_every_250_is_on_disk()
    {
        await using var downstream = TestSmtpServer.Start();
        downstream.CloseAt(SmtpStep.Banner);
        var config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), downstream.Port);
        Queueing(config, "always");
        Directory.CreateDirectory(config.QueueFolder);
        Tmpfs.Mount(config.QueueFolder, "72m");   // the queue keeps 64M free for everything else
        try
        {
            await using var gateway = await GatewayProcess.StartAsync(output, config, downstream);
            var attempts = new List<Attempt>();
            for (int i = 0; i < 6; i++)
                attempts.Add(await Traffic.SendAsync(gateway.Port, $"disk-{i}", Traffic.Message($"disk-{i}", 2 << 20)));
            output.WriteLine(Traffic.Summary(attempts));

            var accepted = attempts.Count(a => a.Accepted);
            Assert.True(accepted >= 1, Traffic.Summary(attempts));
            Assert.All(attempts.Where(a => !a.Accepted), a => Assert.True(a.Reply is { Code: 452 } && a.Reply.EnhancedCode == "4.3.1", a.ToString()));
            Assert.Contains(attempts, a => !a.Accepted);
            await gateway.StopAsync();
            Assert.Equal((accepted, Array.Empty<string>()), QueueContent(config));
        }
        finally
        {
            Tmpfs.Unmount(config.QueueFolder);
        }
    }

    [Fact]
    public async Task Always_mode_answers_before_delivery_and_delivers_in_the_background()
    {
        await using var downstream = TestSmtpServer.Start();
        downstream.HangAt(SmtpStep.Data);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => Queueing(c, "always"));

        var latencies = new List<double>();
        for (int i = 0; i < 40; i++)
        {
            var clock = Stopwatch.StartNew();
            var attempt = await Traffic.SendAsync(gateway.Port, $"bg-{i}", Traffic.Message($"bg-{i}"));
            latencies.Add(clock.Elapsed.TotalMilliseconds);
            Assert.True(attempt.Accepted, attempt.ToString());
        }
        // The server holds its DATA replies: every client was answered without it.
        Assert.Empty(downstream.Messages.Snapshot());
        latencies.Sort();
        output.WriteLine($"always mode, one 1 KB message per connection (connect, EHLO, MAIL, RCPT, DATA, scan, fsync, 250): " +
                         $"p50 {latencies[latencies.Count / 2]:0.0} ms, p90 {latencies[latencies.Count * 9 / 10]:0.0} ms, max {latencies[^1]:0.0} ms");

        downstream.ClearScript();
        await downstream.Messages.WaitUntilAsync(m => Enumerable.Range(0, 40).All(i => Traffic.CopiesOf(downstream, $"bg-{i}") >= 1), Wait, "every message delivered");
        await WaitForEmptyQueueAsync(gateway.Config, "after delivery");
        Assert.All(Enumerable.Range(0, 40), i => Assert.Equal(1, Traffic.CopiesOf(downstream, $"bg-{i}")));
        await gateway.StopAsync();
    }

    private static bool Contains(byte[] content, string text) => content.AsSpan().IndexOf(Encoding.ASCII.GetBytes(text)) >= 0;
}
