using System.Diagnostics;
using System.Text;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// Hostile content and hostile conversations against the published binary: bounded time, bounded
// memory (the gateway's peak RSS from /proc), a clear reply, no crash, and the gateway still
// working afterwards.
public sealed class HostileInputTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const long RssBoundKb = 400 * 1024;

    public static TheoryData<string, string> Bombs_ => new()
    {
        { "10 GiB zip bomb", "default" },
        { "10 GiB zip bomb", "alert_exceeds_max" },
        { "EICAR 50 zips deep", "default" },
        { "EICAR 50 zips deep", "alert_exceeds_max" },
        { "EICAR 10 zips deep", "default" },
        { "10,000 MIME parts", "default" },
        { "EICAR in part 5,000 of 10,000", "default" },
        { "1 MiB header line", "default" },
    };

    [Theory]
    [MemberData(nameof(Bombs_))]
    public async Task Bombs_get_a_clear_reply_in_bounded_time_and_memory(string bomb, string limits)
    {
        var eicar = Encoding.ASCII.GetBytes(TestSignatures.Eicar);
        var (content, expected) = bomb switch
        {
            // libclamav stops at max_file_size/max_scan_size. The engine's clean cache is off (the
            // attachment policy needs every container unpacked every time), so the ten identical
            // copies are each unpacked until max_scan_size: alert_exceeds_max (default yes) refuses it.
            "10 GiB zip bomb" => (Bombs.WithAttachment(bomb, "bomb.zip", Bombs.ZerosZip10G), 554),
            // Past max_recursion (17) the EICAR at the bottom is not reached: refused as
            // Heuristics.Limits.Exceeded.MaxRecursion (alert_exceeds_max defaults to yes).
            "EICAR 50 zips deep" => (Bombs.WithAttachment(bomb, "deep.zip", Bombs.NestedZip(50, eicar)), 554),
            "EICAR 10 zips deep" => (Bombs.WithAttachment(bomb, "deep.zip", Bombs.NestedZip(10, eicar)), 554),
            // More files than max_files (10,000 counts the parts): Heuristics.Limits.Exceeded.MaxFiles.
            "10,000 MIME parts" => (Bombs.ManyParts(bomb, 10_000), 554),
            "EICAR in part 5,000 of 10,000" => (Bombs.ManyParts(bomb, 10_000, eicarAt: 5_000), 554),
            "1 MiB header line" => (SmtpBytes.Ascii(TestMessages.Headers(bomb).Replace("\r\n\r\n", $"\r\nX-Long: {new string('a', 1 << 20)}\r\n\r\n") + "body\r\n"), 250),
            _ => throw new ArgumentException(bomb),
        };

        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini =>
        {
            if (limits == "alert_exceeds_max")
            {
                ini.Set("scan", "alert_exceeds_max", "yes");
            }
        });

        var clock = Stopwatch.StartNew();
        var attempt = await Traffic.SendAsync(gateway.Port, bomb, content, replyTimeout: Bound);
        var elapsed = clock.Elapsed;
        var peak = gateway.ProcStatusKb("VmHWM");
        output.WriteLine($"{bomb} ({limits}): {content.Length} bytes -> {attempt} in {elapsed.TotalSeconds:0.00} s, gateway peak RSS {peak / 1024} MiB");

        Assert.True(attempt.Reply?.Code == expected, $"expected {expected}: {attempt}");
        Assert.True(elapsed < Bound, $"took {elapsed}");
        Assert.True(peak < RssBoundKb, $"peak RSS {peak} kB");
        if (expected == 250)
        {
            await downstream.Messages.WaitForCountAsync(1, Bound, "the message");
        }

        Assert.Equal(expected == 250 ? 1 : 0, Traffic.CopiesOf(downstream, bomb));

        var after = await Traffic.SendAsync(gateway.Port, "after", Traffic.Message("after"));
        Assert.True(after.Accepted, after.ToString());
        await gateway.StopAsync();
    }

    [Fact]
    public async Task A_hundred_thousand_recipients_get_452_past_the_limit_and_the_message_goes_to_the_first_ones()
    {
        const int attempted = 100_000;
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream); // max_recipients = 100
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, Bound);
        await client.EhloAsync();
        Assert.Equal(250, (await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>")).Code);

        // Pipelined in 1,000-command writes while the replies are read as they come.
        var clock = Stopwatch.StartNew();
        var writer = Task.Run(async () =>
        {
            for (var start = 0; start < attempted; start += 1000)
            {
                var batch = new StringBuilder();
                for (var i = start; i < start + 1000; i++)
                {
                    batch.Append($"RCPT TO:<user{i}@dest.test>\r\n");
                }

                await client.SendAsync(SmtpBytes.Ascii(batch.ToString()));
            }
        });
        var codes = new Dictionary<int, int>();
        for (var i = 0; i < attempted; i++)
        {
            var reply = await client.ReadReplyAsync();
            codes[reply.Code] = codes.GetValueOrDefault(reply.Code) + 1;
        }

        await writer;
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(SmtpBytes.DataPayload(Traffic.Message("many-rcpt")));
        var final = await client.ReadReplyAsync();
        var elapsed = clock.Elapsed;
        output.WriteLine($"{attempted} RCPT: {string.Join(", ", codes.Select(c => $"{c.Key} x{c.Value}"))}; final {final} after {elapsed.TotalSeconds:0.0} s; " +
                         $"gateway peak RSS {gateway.ProcStatusKb("VmHWM") / 1024} MiB");

        Assert.Equal(100, codes.GetValueOrDefault(250));
        Assert.Equal(attempted - 100, codes.GetValueOrDefault(452));
        Assert.Equal(250, final.Code);
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Bound, "the message"));
        Assert.Equal(100, delivered.RcptCommands.Count);
        Assert.True(elapsed < Bound);
        Assert.Equal(221, (await client.CommandAsync("QUIT")).Code);
        await gateway.StopAsync();
    }

    // Invalid UTF-8, NUL bytes, over-long lines, unknown verbs, commands out of order: the right
    // 5xx and the session goes on (NOOP still 250), or, for a line past the cap, 500 and close.
    public static TheoryData<string, string, int> BadCommands => new()
    {
        { "invalid UTF-8 in MAIL", "MAIL FROM:<\xff\xfe@client.test>", 501 },
        { "invalid UTF-8 in MAIL with SMTPUTF8", "MAIL FROM:<\xff\xfe@client.test> SMTPUTF8", 501 },
        { "overlong UTF-8 in RCPT", "RCPT TO:<\xc0\xaf@dest.test>", 501 },
        { "UTF-8 address without SMTPUTF8", "MAIL FROM:<j\xc3\xb6rg@client.test>", 553 },
        { "NUL inside a verb", "NO\0OP", 500 },
        { "NUL inside an address", "MAIL FROM:<a\0b@client.test>", 501 },
        { "unknown verb", "XYZZY", 500 },
        { "escape sequence verb", "\x1b[2J", 500 },
        { "empty line", "", 500 },
        { "bare LF line end", "NOOP\n", 500 },
        { "RCPT before MAIL", "RCPT TO:<bob@dest.test>", 503 },
        { "DATA before MAIL", "DATA", 503 },
        { "BDAT before MAIL", "BDAT 0 LAST", 503 },
        { "RSET with argument", "RSET now", 501 },
        { "EHLO without name", "EHLO", 501 },
        { "EXPN", "EXPN staff", 502 },
        { "STARTTLS", "STARTTLS", 502 },
        { "line past the cap", "NOOP " + new string('x', 4000), 500 },
        { "1 MiB line", "MAIL FROM:<" + new string('x', 1 << 20) + ">", 500 },
    };

    [Theory]
    [MemberData(nameof(BadCommands))]
    public async Task Bad_commands_get_the_right_5xx_and_the_session_goes_on(string name, string line, int expected)
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        await client.EhloAsync();
        if (name.Contains("RCPT", StringComparison.Ordinal) && name.Contains("overlong", StringComparison.Ordinal))
        {
            Assert.Equal(250, (await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>")).Code);
        }

        var bytes = SmtpBytes.Ascii(line + (line.EndsWith('\n') ? "" : "\r\n"));
        if (line.Length > 2048)
        {
            // Past max_line_length: 500 and close. The gateway stops reading at the cap, so a line
            // larger than the socket buffers may be cut off by the close (a reset) before the 500
            // can be read; either way the connection ends and the gateway serves the next one.
            var sending = Task.Run(async () =>
            {
                try { await client.SendAsync(bytes); } catch (IOException) { }
            });
            var tooLong = await client.ReadReplyOrCloseAsync();
            output.WriteLine($"{name}: {tooLong?.ToString() ?? "closed"}");
            Assert.True(tooLong is null || tooLong.Code == expected, $"{name}: {tooLong}");
            if (tooLong is not null)
            {
                Assert.Null(await client.ReadReplyOrCloseAsync());
            }

            await sending;
            var next = await Traffic.SendAsync(gateway.Port, "after-long-line", Traffic.Message("after"));
            Assert.True(next.Accepted, next.ToString());
            await gateway.StopAsync();
            return;
        }

        await client.SendAsync(bytes);
        var reply = await client.ReadReplyAsync();
        output.WriteLine($"{name}: {reply}");
        Assert.True(reply.Code == expected, $"{name}: expected {expected}, got {reply}\n{client.Transcript}");

        Assert.Equal(250, (await client.CommandAsync("NOOP")).Code);
        var rest = await Traffic.SendAsync(gateway.Port, "after", Traffic.Message("after"));
        Assert.True(rest.Accepted, rest.ToString());

        await gateway.StopAsync();
    }
}
