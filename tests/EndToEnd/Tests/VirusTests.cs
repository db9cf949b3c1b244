using MailKit.Net.Smtp;
using MimeKit;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Infected mail is refused with 554 5.7.1 naming the virus; the downstream gets RSET, never DATA
// (mail past 512 KiB is forwarded while it arrives and never ended: ForwardWhileArrivingTests).
public sealed class VirusTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(15);

    public static TheoryData<string> InfectedMessages => ["EICAR in the text body", "clam.exe base64 attachment", "clam.zip attachment", "clam.exe inside a message/rfc822 attachment"];

    [Theory]
    [MemberData(nameof(InfectedMessages))]
    public async Task Infected_message_is_refused_with_554_and_never_reaches_the_downstream(string kind)
    {
        var (message, virus) = Build(kind);
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);

        var refusal = await Assert.ThrowsAsync<SmtpCommandException>(() => TestMessages.SendWithMailKitAsync(gateway.Port, message));

        Assert.Equal(554, (int)refusal.StatusCode);
        Assert.Contains(virus, refusal.Message);
        await downstream.Rsets.WaitForCountAsync(1, Wait, "the gateway's RSET to the downstream");
        AssertNothingDelivered(downstream);
        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("infected", log["verdict"]);
        Assert.Contains(virus, log["virus"]);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Refusal_reply_is_554_5_7_1_and_names_the_virus()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var reply = await RawTransaction.SendAsync(client, TestMessages.Plain("eicar", "before", TestSignatures.Eicar, "after"));

        Assert.Equal(554, reply.Code);
        Assert.Equal("5.7.1", reply.EnhancedCode);
        Assert.Contains(TestSignatures.EicarName, reply.Text);
        await downstream.Rsets.WaitForCountAsync(1, Wait, "the gateway's RSET to the downstream");
        AssertNothingDelivered(downstream);
        await gateway.StopAsync();
    }

    // Mail past 512 KiB is forwarded while it arrives: the downstream may have had DATA and part
    // of the content, but never the end of the data, so it delivered nothing and refused nothing.
    internal static void AssertNoEndOfData(TestSmtpServer downstream) =>
        Assert.True(downstream.Messages.Count == 0 && downstream.Refused.Count == 0, $"the downstream got the end of a message\n{downstream}");

    internal static void AssertNothingDelivered(TestSmtpServer downstream)
    {
        Assert.True(downstream.Messages.Count == 0, $"the downstream accepted a message\n{downstream}");
        var bodyCommands = downstream.Commands.Snapshot().Where(c => c.StartsWith("DATA", StringComparison.OrdinalIgnoreCase) || c.StartsWith("BDAT", StringComparison.OrdinalIgnoreCase));
        Assert.True(!bodyCommands.Any(), $"the downstream was sent DATA/BDAT\n{downstream}");
    }

    private static (MimeMessage Message, string Virus) Build(string kind) => kind switch
    {
        "EICAR in the text body" => (
            TestMessages.Envelope("eicar", new TextPart("plain") { Text = "before\r\n" + TestSignatures.Eicar + "\r\nafter\r\n" }),
            TestSignatures.EicarName),
        "clam.exe base64 attachment" => (
            TestMessages.WithAttachment("exe", "see attachment\r\n", "clam.exe", File.ReadAllBytes(TestSignatures.ClamExe)),
            TestSignatures.ClamExeName),
        "clam.zip attachment" => (
            TestMessages.WithAttachment("zip", "see attachment\r\n", "clam.zip", File.ReadAllBytes(TestSignatures.ClamZip), "application/zip"),
            TestSignatures.ClamExeName),
        "clam.exe inside a message/rfc822 attachment" => (NestedMessage(), TestSignatures.ClamExeName),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    private static MimeMessage NestedMessage()
    {
        var inner = TestMessages.WithAttachment("inner", "the inner message\r\n", "clam.exe", File.ReadAllBytes(TestSignatures.ClamExe));
        var outer = new Multipart("mixed")
        {
            new TextPart("plain") { Text = "forwarding a message\r\n" },
            new MessagePart("rfc822") { Message = inner },
        };
        return TestMessages.Envelope("forwarded", outer);
    }
}
