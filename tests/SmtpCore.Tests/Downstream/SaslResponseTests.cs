using System.Text;
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

// A SASL response is a secret: whatever goes wrong while it waits for its reply, no error names
// it, in any letter case (issue 11, item 1).
public class SaslResponseTests
{
    private const string Password = "Tr0ub4dor&3-secret";
    private static readonly string Encoded = Convert.ToBase64String(Encoding.UTF8.GetBytes(Password));

    [Theory]
    [InlineData("close")]
    [InlineData("hang")]
    [InlineData("malformed")]
    public async Task AnErrorWhileWaitingForTheReplyNamesTheResponseNotItsText(string ending)
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("AUTH LOGIN");
            await s.ExpectAsync("AUTH LOGIN", "334 VXNlcm5hbWU6");
            await s.ExpectAsync(Convert.ToBase64String("alice"u8), "334 UGFzc3dvcmQ6");
            Assert.Equal(Encoded, await s.ReadLineAsync());
            switch (ending)
            {
                case "close": s.Close(); break;
                case "hang": await s.WaitForCloseAsync(); break;
                default:
                    await s.SendAsync("not a reply\r\n");
                    await s.WaitForCloseAsync();
                    break;
            }
        });

        // Only the hang needs the reply timeout to end it; short enough for a quick test, long
        // enough that the replies before it arrive in time on a loaded 2-core machine.
        await using var client = await server.ConnectAsync(replyTimeout: TimeSpan.FromSeconds(ending == "hang" ? 2 : 30));
        Assert.Equal(334, (await client.SendCommandAsync("AUTH LOGIN")).Code);
        Assert.Equal(334, (await client.SendSaslResponseAsync(Convert.ToBase64String("alice"u8))).Code);
        var ex = await Assert.ThrowsAsync<DownstreamException>(() => client.SendSaslResponseAsync(Encoded));
        var later = await Assert.ThrowsAsync<DownstreamException>(() => client.NoopAsync());

        foreach (var message in new[] { ex.Message, ex.ToString(), later.Message })
        {
            Assert.DoesNotContain(Encoded, message, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain(Password, message, StringComparison.OrdinalIgnoreCase);
        }
        if (ending != "malformed") Assert.Contains("AUTH response", ex.Message);
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task AResponseWithALineBreakIsRefusedBeforeAnythingIsSent()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("AUTH LOGIN");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var ex = Assert.Throws<ArgumentException>(() => { _ = client.SendSaslResponseAsync("c2VjcmV0\r\nRSET"); });
            Assert.DoesNotContain("c2VjcmV0", ex.Message);
        }
        await server.AssertScriptSucceededAsync();
    }
}
