using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// SMTP smuggling (CVE-2023-51764/51765/51766 and relatives) with PIPELINING: the whole
// conversation, a fake end-of-data with a smuggled transaction behind it, the real end and a
// legitimate second transaction, in ONE write, as DATA and as BDAT chunks. More separators than
// Tests/SmugglingTests.cs. The downstream must never see the smuggled MAIL; it sees the first
// message once (normalize) or not at all (reject: 550 5.6.0), and the honest second message once.
// (STARTTLS command injection comes with issue 4.)
public sealed class PipelinedSmugglingTests(ITestOutputHelper output)
{
    private const string Smuggled = "MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nsmuggled\r\n";

    private static readonly Dictionary<string, string> Separators = new()
    {
        ["LF.LF"] = "\n.\n",
        ["LF.CRLF"] = "\n.\r\n",
        ["CRLF.LF"] = "\r\n.\n",
        ["CR.CR"] = "\r.\r",
        ["CR.CRLF"] = "\r.\r\n",
        ["CRLF.CR"] = "\r\n.\r",
        ["CR.LF"] = "\r.\n",
        ["LF.CR"] = "\n.\r",
        ["CRLF.CR CRLF"] = "\r\n.\r\r\n",
        ["CRLF.NUL CRLF"] = "\r\n.\0\r\n",
        ["CRLF SP.CRLF"] = "\r\n .\r\n",
    };

    [Theory]
    [InlineData("normalize", false)]
    [InlineData("reject", false)]
    [InlineData("normalize", true)]
    [InlineData("reject", true)]
    public async Task One_pipelined_write_with_a_fake_end_of_data_never_smuggles(string bareNewline, bool bdat)
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("limits", "bare_newline", bareNewline));
        var expectedMessages = 0;
        foreach (var (name, separator) in Separators)
        {
            var head = Bombs.Headers($"smuggle-{name}", "text/plain") + "hello";
            var first = head + separator + Smuggled;
            var second = Bombs.Headers($"honest-{name}", "text/plain") + "honest\r\n";
            var envelope = $"MAIL FROM:<{TestMessages.Sender}>\r\nRCPT TO:<{TestMessages.Recipient}>\r\n";
            string wire;
            if (bdat)
            {
                // The fake end sits inside the first chunk; the chunk border is inside the separator.
                var cut = head.Length + 1;
                wire = "EHLO client.test\r\n" + envelope +
                       $"BDAT {cut}\r\n{first[..cut]}BDAT {first.Length - cut} LAST\r\n{first[cut..]}" +
                       envelope + $"BDAT {second.Length} LAST\r\n{second}QUIT\r\n";
            }
            else
            {
                wire = "EHLO client.test\r\n" + envelope + "DATA\r\n" + first + "\r\n.\r\n" +
                       envelope + "DATA\r\n" + second + ".\r\nQUIT\r\n";
            }

            await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
            await client.SendAsync(SmtpBytes.Ascii(wire));
            var replies = new List<SmtpReply>();
            while (await client.ReadReplyOrCloseAsync() is { } reply)
            {
                replies.Add(reply);
                if (reply.Code == 221)
                {
                    break;
                }
            }

            var codes = replies.Select(r => r.Code).ToList();
            output.WriteLine($"{name} ({(bdat ? "BDAT" : "DATA")}, {bareNewline}): {string.Join(" ", codes)}");
            var firstHasBare = SmtpBytes.HasBareNewline(SmtpBytes.Ascii(first));
            var firstRefused = bareNewline == "reject" && firstHasBare;
            Assert.True(codes.Count(c => c == 550) == (firstRefused ? 1 : 0), $"{name}: {string.Join(" | ", replies)}");
            Assert.Equal(221, codes[^1]);
            Assert.Equal(bdat ? 0 : 2, codes.Count(c => c == 354)); // two DATA commands, never a third
            expectedMessages += firstRefused ? 1 : 2;
            await downstream.Messages.WaitForCountAsync(expectedMessages, TimeSpan.FromSeconds(15), $"the messages after {name}");
            Assert.Equal(firstRefused ? 0 : 1, Traffic.CopiesOf(downstream, $"smuggle-{name}"));
            Assert.Equal(1, Traffic.CopiesOf(downstream, $"honest-{name}"));
        }

        // Pooled downstream connections stay open for the next client; shutdown closes them.
        await gateway.StopAsync();
        await downstream.WaitAllSessionsClosedAsync(TimeSpan.FromSeconds(15));
        var commands = downstream.Commands.Snapshot();
        Assert.True(!commands.Any(c => c.Contains("evil@x.test", StringComparison.OrdinalIgnoreCase)), $"the downstream saw the smuggled MAIL\n{downstream}");
        Assert.Equal(expectedMessages, downstream.Messages.Count);
        Assert.All(downstream.Messages.Snapshot(), m => Assert.False(SmtpBytes.HasBareNewline(m.Content), "bare CR/LF reached the downstream"));
    }
}
