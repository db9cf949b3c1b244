using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// Every downstream fault in turn against one running gateway, many messages each (DATA and BDAT,
// small and spilled, several at once), counted: under a fault no client may get 250 and nothing may
// reach the downstream; when the fault is gone, every message gets through exactly once.
// Tests/DownstreamFailureTests.cs checks one message per fault on a fresh gateway; this one checks
// that the same gateway keeps its word across all of them in a row.
public sealed class DownstreamFaultCountTests(ITestOutputHelper output)
{
    private const int PerFault = 8;

    private static readonly (string Name, Action<TestSmtpServer> Arrange, int ExpectedClass)[] Faults =
    [
        ("banner never comes", d => d.HangAt(SmtpStep.Banner), 4),
        ("banner 554", d => d.Fail(SmtpStep.Banner, "554 5.3.2 not today"), 4),
        ("EHLO 421", d => d.Fail(SmtpStep.Ehlo, "421 4.3.2 shutting down"), 4),
        ("MAIL 451", d => d.Fail(SmtpStep.Mail, "451 4.3.0 mail queue busy"), 4),
        ("MAIL 550", d => d.Fail(SmtpStep.Mail, "550 5.7.1 sender refused"), 5),
        ("MAIL hangs", d => d.HangAt(SmtpStep.Mail), 4),
        ("closes after MAIL", d => d.CloseAt(SmtpStep.Mail), 4),
        ("RCPT 450", d => d.Fail(SmtpStep.Rcpt, "450 4.2.1 mailbox busy"), 4),
        ("RCPT 550", d => d.Fail(SmtpStep.Rcpt, "550 5.1.1 no such user"), 5),
        ("RCPT hangs", d => d.HangAt(SmtpStep.Rcpt), 4),
        ("closes after RCPT", d => d.CloseAt(SmtpStep.Rcpt), 4),
        ("DATA 451", d => d.Fail(SmtpStep.Data, "451 4.3.0 try later"), 4),
        ("DATA 554", d => d.Fail(SmtpStep.Data, "554 5.5.0 no data for you"), 5),
        ("DATA hangs", d => d.HangAt(SmtpStep.Data), 4),
        ("closes at DATA", d => d.CloseAt(SmtpStep.Data), 4),
        ("dies inside the body", d => d.CloseInsideData(), 4),
        ("end of data 452", d => d.Fail(SmtpStep.EndOfData, "452 4.3.1 out of disk"), 4),
        ("end of data 554", d => d.Fail(SmtpStep.EndOfData, "554 5.6.0 content refused"), 5),
        ("hangs after the body", d => d.HangAt(SmtpStep.EndOfData), 4),
        ("closes after the body", d => d.CloseAt(SmtpStep.EndOfData), 4),
    ];

    [Fact]
    public async Task Every_downstream_fault_in_a_row_gives_no_250_and_delivers_nothing_then_all_flows_again()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
            .Set("general", "smtp_server_timeout", "1s")
            .Set("limits", "memory_threshold", "64K"));

        var all = new List<Attempt>();
        var wrongClass = new List<string>();
        foreach (var (name, arrange, expectedClass) in Faults)
        {
            downstream.ClearScript();
            arrange(downstream);
            var attempts = await Traffic.RunAsync(PerFault, 4, i => SendVariedAsync(gateway.Port, $"{Slug(name)}-{i}", i));
            all.AddRange(attempts);
            output.WriteLine($"{name}: {Traffic.Summary(attempts)}");

            Traffic.AssertNoneAccepted(attempts, downstream);
            Assert.True(downstream.Messages.Count == 0, $"{name}: the downstream accepted a message\n{downstream}");
            var silent = attempts.Where(a => a.Reply is null).ToList();
            Assert.True(silent.Count == 0, $"{name}: clients left without any reply: {string.Join("; ", silent)}");
            wrongClass.AddRange(attempts.Where(a => a.Reply!.Class != expectedClass).Select(a => $"{name}: {a}"));
        }

        Assert.True(wrongClass.Count == 0, $"expected class per fault not met:\n{string.Join("\n", wrongClass)}");

        // The fault is gone: the same gateway delivers everything, exactly once each.
        downstream.ClearScript();
        var good = await Traffic.RunAsync(PerFault * 2, 4, i => SendVariedAsync(gateway.Port, $"after-{i}", i));
        output.WriteLine($"after the faults: {Traffic.Summary(good)}");
        Assert.All(good, a => Assert.True(a.Accepted, a.ToString()));
        await downstream.Messages.WaitForCountAsync(good.Count, TimeSpan.FromSeconds(20), "the messages sent after the faults");
        Assert.All(good, a => Assert.Equal(1, Traffic.CopiesOf(downstream, a.Id)));
        Assert.Equal(good.Count, downstream.Messages.Count);

        output.WriteLine($"faults injected: {Faults.Length}, messages under fault: {all.Count}, 2xx under fault: 0, " +
                         $"delivered under fault: 0, delivered after: {good.Count}/{good.Count}");
        await gateway.StopAsync();
    }

    // Small DATA, spilled DATA (past memory_threshold) and BDAT, in turn.
    private static Task<Attempt> SendVariedAsync(int port, string id, int i) => (i % 4) switch
    {
        0 or 1 => Traffic.SendAsync(port, id, Traffic.Message(id)),
        2 => Traffic.SendAsync(port, id, Traffic.Message(id, 300 * 1024)),
        _ => Traffic.SendAsync(port, id, Traffic.Message(id), bdat: true),
    };

    private static string Slug(string name) => name.Replace(' ', '-');
}
