using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// SMTP smuggling (CVE-2023-51764 and relatives): an end-of-data look-alike made with bare LF or CR
// inside the message, followed by a second transaction. Only CRLF.CRLF ends DATA at the gateway,
// and whatever it forwards must not end early at a strict downstream either: the downstream
// sees one message (normalize) or none (reject), and never a MAIL from the smuggler.
public sealed class SmugglingTests(ITestOutputHelper output)
{
    private const string Smuggled = "MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n.\r\n";

    private static readonly Dictionary<string, string> Separators = new()
    {
        ["LF.CRLF"] = "\n.\r\n",
        ["CRLF.LF"] = "\r\n.\n",
        ["LF.LF"] = "\n.\n",
        ["CR.CRLF"] = "\r.\r\n",
        ["CRLF.CR"] = "\r\n.\r",
        ["CRLF.CRLF"] = "\r\n.\r\n", // legal inside BDAT; the danger is a BDAT-to-DATA conversion without stuffing
    };

    public static TheoryData<string, string> DataCases => Cross(["LF.CRLF", "CRLF.LF", "LF.LF", "CR.CRLF", "CRLF.CR"], ["normalize", "reject"]);

    public static TheoryData<string, string> BdatCases => Cross([.. Separators.Keys], ["normalize", "reject"]);

    [Theory]
    [MemberData(nameof(DataCases))]
    public async Task Smuggling_inside_DATA_never_yields_a_second_message(string separator, string bareNewline)
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("limits", "bare_newline", bareNewline));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        // Everything up to the first CRLF.CRLF (the one closing "smuggled") is the one message;
        // the "real" CRLF.CRLF after it is two junk command lines for a strict server.
        var head = TestMessages.Headers("smuggling") + "hello";
        var content = SmtpBytes.Ascii(head + Separators[separator] + Smuggled[..^3]);
        await RawTransaction.BeginAsync(client);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(SmtpBytes.Ascii(SmtpBytes.Text(content) + ".\r\n" + "\r\n.\r\n"));
        var final = await client.ReadReplyAsync();
        await AssertNoFurtherTransactionAsync(client);

        // The gateway unstuffs before it normalises, so a dot after a CRLF may be gone; the rest
        // must arrive as one message with CRLF line ends.
        await AssertOutcomeAsync(gateway, downstream, bareNewline, final, content, client, delivered =>
        {
            Assert.False(SmtpBytes.HasBareNewline(delivered), "bare CR/LF reached the downstream");
            var text = SmtpBytes.Text(delivered);
            Assert.Contains(head, text);
            Assert.Contains(Smuggled[..^3], text);
        });
    }

    [Theory]
    [MemberData(nameof(BdatCases))]
    public async Task Smuggling_inside_BDAT_never_yields_a_second_message(string separator, string bareNewline)
    {
        // A downstream without CHUNKING makes the gateway turn BDAT into DATA, the risky direction.
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("limits", "bare_newline", bareNewline));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var head = TestMessages.Headers("smuggling in BDAT") + "hello";
        var content = SmtpBytes.Ascii(head + Separators[separator] + Smuggled + "\r\n.\r\ntail\r\n");
        // Chunk borders inside the separator and inside the final dot line.
        var chunks = RawTransaction.Split(content, head.Length + 1, content.Length - 10);
        await RawTransaction.BeginAsync(client);
        var final = await RawTransaction.SendChunksAsync(client, chunks);
        await AssertNoFurtherTransactionAsync(client);

        // BDAT content is literal: exactly the chunks, bare CR/LF turned into CRLF.
        await AssertOutcomeAsync(gateway, downstream, bareNewline, final, content, client,
            delivered => Delivered.SplitPrepended(delivered, Normalized(content)));
    }

    private static async Task AssertOutcomeAsync(GatewayProcess gateway, TestSmtpServer downstream, string bareNewline, SmtpReply final, byte[] content, RawSmtpClient client, Action<byte[]> assertDelivered)
    {
        var hasBareNewline = SmtpBytes.HasBareNewline(content);
        if (bareNewline == "reject" && hasBareNewline)
        {
            Assert.True(final.Code == 550 && final.EnhancedCode == "5.6.0", $"expected 550 5.6.0, got {final}\n{client.Transcript}");
        }
        else
        {
            Assert.True(final.Code == 250, $"expected 250, got {final}\n{client.Transcript}");
            var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, TimeSpan.FromSeconds(15), "the one message"));
            assertDelivered(delivered.Content);
        }

        // Pooled downstream connections stay open for the next client; shutdown closes them.
        await gateway.StopAsync();
        await downstream.WaitAllSessionsClosedAsync(TimeSpan.FromSeconds(15));
        var commands = downstream.Commands.Snapshot();
        Assert.True(!commands.Any(c => c.Contains("evil@x", StringComparison.OrdinalIgnoreCase)), $"the downstream saw the smuggled MAIL\n{downstream}");
        Assert.True(commands.Count(c => c.StartsWith("MAIL", StringComparison.OrdinalIgnoreCase)) <= 1, $"more than one MAIL downstream\n{downstream}");
        Assert.True(downstream.Messages.Count == (final.Code == 250 ? 1 : 0), $"wrong number of messages downstream\n{downstream}");
    }

    // After the message: QUIT, reading whatever replies come first (junk lines get errors).
    // None of them may be positive: a 250 or 354 there would mean a second transaction was running.
    private static async Task AssertNoFurtherTransactionAsync(RawSmtpClient client)
    {
        await client.SendAsync("QUIT\r\n");
        while (await client.ReadReplyOrCloseAsync() is { } reply && reply.Code != 221)
        {
            Assert.True(reply.Class is 4 or 5, $"unexpected reply after the message: {reply}\n{client.Transcript}");
        }
    }

    // Every bare CR or LF turned into CRLF.
    private static byte[] Normalized(byte[] content)
    {
        var output = new List<byte>(content.Length + 16);
        for (var i = 0; i < content.Length; i++)
        {
            var b = content[i];
            if (b == '\r' && i + 1 < content.Length && content[i + 1] == '\n')
            {
                output.Add(b);
                output.Add(content[++i]);
            }
            else if (b is (byte)'\r' or (byte)'\n')
            {
                output.AddRange("\r\n"u8);
            }
            else
            {
                output.Add(b);
            }
        }

        return [.. output];
    }

    private static TheoryData<string, string> Cross(string[] separators, string[] modes)
    {
        var data = new TheoryData<string, string>();
        foreach (var separator in separators)
        {
            foreach (var mode in modes)
            {
                data.Add(separator, mode);
            }
        }

        return data;
    }
}
