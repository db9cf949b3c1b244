using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// `portcullis queue` against a running gateway in mode = always whose mail server is down (it
// hangs up at the greeting), then back: list, show, hold, delete, flush, release, status.
public sealed class QueueCliTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private static async Task SendAsync(int port, string subject)
    {
        await using var client = await RawSmtpClient.ConnectAsync(port);
        await client.EhloAsync();
        Assert.Equal(250, (await client.CommandAsync($"MAIL FROM:<{TestMessages.Sender}>")).Code);
        Assert.Equal(250, (await client.CommandAsync($"RCPT TO:<{TestMessages.Recipient}>")).Code);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(TestMessages.Plain(subject, "queued while the server is away"));
        var reply = await client.CommandAsync(".");
        Assert.True(reply.Code == 250, reply.ToString());
    }

    private static async Task<CliResult> QueueAsync(GatewayIni config, params string[] verb) =>
        await PortcullisBinary.RunAsync(["queue", .. verb, "--config", config.FilePath]);

    private static async Task<List<JsonElement>> ListAsync(GatewayIni config)
    {
        var result = await QueueAsync(config, "list", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        return JsonDocument.Parse(result.Stdout).RootElement.EnumerateArray().ToList();
    }

    // Polls `queue list --json` (the gateway is another process) until the entries satisfy `done`.
    private static async Task<List<JsonElement>> ListUntilAsync(GatewayIni config, Func<List<JsonElement>, bool> done, string what)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var entries = await ListAsync(config);
            if (done(entries)) return entries;
            Assert.True(clock.Elapsed < Wait, $"{what}; the queue: {string.Join(", ", entries)}");
            await Task.Delay(100);
        }
    }

    private static bool Arrived(IReadOnlyList<ReceivedMessage> messages, string subject) =>
        messages.Any(m => Encoding.ASCII.GetString(m.Content).Contains($"\r\nSubject: {subject}\r\n", StringComparison.Ordinal));

    [Theory]
    [InlineData("queue")]
    [InlineData("queue list")]
    [InlineData("queue show")]
    [InlineData("queue flush")]
    [InlineData("queue hold")]
    [InlineData("queue release")]
    [InlineData("queue delete")]
    public async Task Every_queue_verb_prints_its_help_and_exits_0(string verb)
    {
        var result = await PortcullisBinary.RunAsync([.. verb.Split(' '), "--help"]);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains($"Usage:\n  portcullis {verb}", result.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Queue_show_without_an_id_is_bad_usage()
    {
        var result = await PortcullisBinary.RunAsync("queue", "show");

        Assert.True(result.ExitCode == 64, result.ToString());
        Assert.Contains("Run 'portcullis queue show --help' for usage.", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Queue_verbs_operate_a_running_gateway_whose_server_is_down_then_up()
    {
        await using var downstream = TestSmtpServer.Start();
        downstream.CloseAt(SmtpStep.Banner);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("queue", "mode", "always"));
        var config = gateway.Config;

        foreach (var subject in new[] { "first", "second", "third" })
        {
            await SendAsync(gateway.Port, subject);
        }

        // Each one is tried at once and fails; min_backoff (1 min) keeps them waiting after that.
        var entries = await ListUntilAsync(config, e => e.Count == 3 && e.All(x => x.GetProperty("attempts").GetInt32() >= 1),
            "three entries, each tried once");
        var ids = entries.Select(e => e.GetProperty("id").GetString()!).ToArray();
        Assert.All(entries, e => Assert.Equal("bob@dest.test", e.GetProperty("recipients")[0].GetProperty("address").GetString()));
        Assert.All(entries, e => Assert.Equal("pending", e.GetProperty("recipients")[0].GetProperty("state").GetString()));
        Assert.All(entries, e => Assert.NotEqual("", e.GetProperty("last_reply").GetString()));

        var list = await QueueAsync(config, "list");
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.All(ids, id => Assert.Contains(id, list.Stdout, StringComparison.Ordinal));
        Assert.Contains("3 messages, ", list.Stdout, StringComparison.Ordinal);

        // Which id is which message: `show` prints the header.
        var bySubject = new Dictionary<string, string>();
        foreach (var id in ids)
        {
            var show = await QueueAsync(config, "show", id);
            Assert.True(show.ExitCode == 0, show.ToString());
            Assert.Contains($"sender:         <{TestMessages.Sender}>", show.Stdout, StringComparison.Ordinal);
            Assert.DoesNotContain("queued while the server is away", show.Stdout, StringComparison.Ordinal);
            var subject = new[] { "first", "second", "third" }.Single(s => show.Stdout.Contains($"\nSubject: {s}\n", StringComparison.Ordinal));
            bySubject[subject] = id;
        }

        var status = await PortcullisBinary.RunAsync("status", "--config", config.FilePath);
        Assert.True(status.ExitCode == 0, status.ToString());
        Assert.Matches(@"(?m)^queue: 3 messages, [1-9][0-9]* bytes, oldest ", status.Stdout);
        Assert.Matches(@"<th>queue</th><td>3 messages, [1-9][0-9]* bytes, oldest ", await Control.GetAsync(config.StatusPort, "/"));
        Assert.Contains("portcullis_queue_messages 3\n", await Control.GetAsync(config.StatusPort, "/metrics"), StringComparison.Ordinal);

        var hold = await QueueAsync(config, "hold", bySubject["second"]);
        Assert.True(hold.ExitCode == 0, hold.ToString());
        var delete = await QueueAsync(config, "delete", bySubject["third"]);
        Assert.True(delete.ExitCode == 0, delete.ToString());
        var missing = await QueueAsync(config, "show", bySubject["third"]);
        Assert.True(missing.ExitCode == 1, missing.ToString());
        Assert.Contains($"no queue entry {bySubject["third"]}", missing.Stderr, StringComparison.Ordinal);

        // The server is back: flush sends what is not held, at once (min_backoff is a minute).
        downstream.ClearScript();
        var flush = await QueueAsync(config, "flush");
        Assert.True(flush.ExitCode == 0, flush.ToString());
        await downstream.Messages.WaitUntilAsync(m => Arrived(m, "first"), Wait, "the first message after the flush");
        var left = await ListUntilAsync(config, e => e.Count == 1, "only the held entry left");
        Assert.Equal(bySubject["second"], left[0].GetProperty("id").GetString());
        Assert.True(left[0].GetProperty("held").GetBoolean());
        Assert.Contains("HELD", (await QueueAsync(config, "list")).Stdout, StringComparison.Ordinal);

        var release = await QueueAsync(config, "release", bySubject["second"]);
        Assert.True(release.ExitCode == 0, release.ToString());
        Assert.True((await QueueAsync(config, "flush")).ExitCode == 0);
        await downstream.Messages.WaitUntilAsync(m => Arrived(m, "second"), Wait, "the released message");
        await ListUntilAsync(config, e => e.Count == 0, "an empty queue");

        Assert.Equal(2, downstream.Messages.Count);
        Assert.False(Arrived(downstream.Messages.Snapshot(), "third"));

        await gateway.StopAsync();
        var down = await QueueAsync(config, "flush");
        Assert.True(down.ExitCode == 69, down.ToString());
        Assert.Contains("is it running?", down.Stderr, StringComparison.Ordinal);
    }
}
