using System.Collections.Concurrent;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// kill -9 in the middle of a stream of messages (small ones in memory, large ones spilled to
// temp_folder, DATA and BDAT), then a restart on the same port and folder. A client that got 250
// must find its message at the downstream exactly once; a client whose connection died without an
// answer would retry, and its message is at the downstream at most once. No spill file outlives
// the kill (they are unlinked when created), and temp_folder is empty once the gateway restarted
// (libclamav's per-scan directories that the kill left are swept at start-up).
public sealed class KillNineTests(ITestOutputHelper output)
{
    private const int Senders = 4;

    [Fact]
    public async Task Kill_9_mid_stream_loses_nothing_that_got_250_and_leaves_nothing_in_temp_folder()
    {
        await using var downstream = TestSmtpServer.Start();
        var config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), downstream.Port);
        config.Set("limits", "memory_threshold", "64K");
        var attempts = new ConcurrentQueue<Attempt>();
        var sequence = 0;

        await using (var first = await GatewayProcess.StartAsync(output, config, downstream))
        {
            // Senders go on until the gateway is gone (connect refused), then stop by themselves.
            var stream = Enumerable.Range(0, Senders).Select(_ => Task.Run(async () =>
            {
                while (true)
                {
                    var n = Interlocked.Increment(ref sequence);
                    var attempt = await SendAsync(config.ListenPort, n);
                    if (attempt.Reply is null && attempt.Step == "connect")
                    {
                        return; // never sent: not part of the stream
                    }

                    attempts.Enqueue(attempt);
                }
            })).ToArray();

            await downstream.Messages.WaitForCountAsync(40, TimeSpan.FromSeconds(60), "40 messages before the kill");
            await first.KillAsync();
            await Task.WhenAll(stream).WaitAsync(TimeSpan.FromSeconds(60));
            // Spill files were unlinked at creation; libclamav's per-scan directories may be left.
            var spills = Directory.GetFiles(config.SpoolFolder, "*.spill");
            Assert.True(spills.Length == 0, $"spill files after kill -9: {string.Join(", ", spills)}");
            output.WriteLine($"left in temp_folder by kill -9: [{string.Join(", ", Directory.EnumerateFileSystemEntries(config.SpoolFolder).Select(Path.GetFileName))}]");
        }

        var beforeRestart = attempts.ToArray();
        await using var second = await GatewayProcess.StartAsync(output, config, downstream);
        AssertEmpty(config.SpoolFolder, "after the restart");
        var after = await Traffic.RunAsync(40, Senders, _ => SendAsync(config.ListenPort, Interlocked.Increment(ref sequence)));
        Assert.All(after, a => Assert.True(a.Accepted, $"after the restart: {a}"));

        var all = beforeRestart.Concat(after).ToList();
        var accepted = all.Where(a => a.Accepted).ToList();
        var unanswered = all.Where(a => a.Reply is null).ToList();
        var refused = all.Where(a => a.Reply is not null && !a.Accepted).ToList();
        await downstream.Messages.WaitUntilAsync(m => accepted.All(a => Traffic.CopiesOf(downstream, a.Id) >= 1) || m.Count >= all.Count,
            TimeSpan.FromSeconds(20), "every accepted message at the downstream");

        var lost = accepted.Where(a => Traffic.CopiesOf(downstream, a.Id) == 0).ToList();
        var duplicated = all.Where(a => Traffic.CopiesOf(downstream, a.Id) > 1).ToList();
        var unansweredDelivered = unanswered.Count(a => Traffic.CopiesOf(downstream, a.Id) == 1);
        output.WriteLine($"messages sent: {all.Count} ({beforeRestart.Length} before the kill, {after.Count} after the restart); " +
                         $"250: {accepted.Count}; no answer (killed in flight): {unanswered.Count}, of which at the downstream: {unansweredDelivered}; " +
                         $"refused: {refused.Count}; lost after 250: {lost.Count}; duplicated: {duplicated.Count}");
        foreach (var a in unanswered)
        {
            output.WriteLine($"  in flight at the kill: {a}, copies downstream: {Traffic.CopiesOf(downstream, a.Id)}");
        }

        Assert.True(lost.Count == 0, $"messages answered 250 are missing downstream: {string.Join("; ", lost)}");
        Assert.True(duplicated.Count == 0, $"messages at the downstream more than once: {string.Join("; ", duplicated)}");
        Assert.True(refused.All(a => Traffic.CopiesOf(downstream, a.Id) == 0), "a refused message reached the downstream");
        Assert.True(unanswered.Count >= 1, "the kill hit no message in flight; the test proved less than it should");

        await second.StopAsync(); // and temp_folder is empty after the restarted gateway's stop
    }

    // Small DATA, spilled DATA and BDAT in turn; a dying gateway gets 5 s to answer at most.
    private static Task<Attempt> SendAsync(int port, int n)
    {
        var id = $"kill-{n}";
        var timeout = TimeSpan.FromSeconds(10);
        return (n % 3) switch
        {
            0 => Traffic.SendAsync(port, id, Traffic.Message(id), replyTimeout: timeout),
            1 => Traffic.SendAsync(port, id, Traffic.Message(id, 200 * 1024), replyTimeout: timeout),
            _ => Traffic.SendAsync(port, id, Traffic.Message(id, 100 * 1024), bdat: true, replyTimeout: timeout),
        };
    }

    private static void AssertEmpty(string folder, string when)
    {
        var left = Directory.EnumerateFileSystemEntries(folder, "*", SearchOption.AllDirectories).ToArray();
        Assert.True(left.Length == 0, $"temp_folder {when}: {string.Join(", ", left)}");
    }
}
