// XCLIENT (Postfix XCLIENT_README) against the scripted server: what goes on the wire, the
// second EHLO after 220, and what each kind of refusal leaves behind.
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

public class DownstreamXClientTests
{
    private const string PostfixXClient = "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT";

    private static List<KeyValuePair<string, string>> Client(string helo = "client.example", string login = "[UNAVAILABLE]") =>
    [
        new("HELO", helo),
        new("PROTO", "ESMTP"),
        new("LOGIN", login),
        new("NAME", "[UNAVAILABLE]"),
        new("ADDR", "192.0.2.7"),
        new("PORT", "4711"),
        new("DESTADDR", "IPV6:2001:db8::25"),
        new("DESTPORT", "25"),
    ];

    private static string Ehlo(params string[] lines)
    {
        var text = new System.Text.StringBuilder();
        for (int i = 0; i < lines.Length; i++) text.Append(i == lines.Length - 1 ? "250 " : "250-").Append(lines[i]).Append("\r\n");
        return text.ToString();
    }

    [Fact]
    public void TheXClientKeywordListsItsAttributes()
    {
        var caps = DownstreamCapabilities.Parse(new SmtpReply(250, null, "mx.example.org", "PIPELINING", "xclient name ADDR Login"));
        Assert.Equal(["ADDR", "LOGIN", "NAME"], caps.XClient.Order());
        Assert.Empty(DownstreamCapabilities.Parse(new SmtpReply(250, null, "mx.example.org", "PIPELINING")).XClient);
    }

    [Fact]
    public async Task SendsTheOfferedAttributesThenGreetsAgainAsTheClient()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", "XCLIENT NAME ADDR PROTO HELO LOGIN");   // no PORT, DESTADDR, DESTPORT
            await s.ExpectAsync("XCLIENT HELO=client.example PROTO=ESMTP LOGIN=us+C3+A9r+20one NAME=[UNAVAILABLE] ADDR=192.0.2.7",
                "220 fake.test ESMTP again");
            Assert.Equal("EHLO client.example", await s.ReadLineAsync());
            await s.SendAsync(Ehlo("fake.test", "PIPELINING", "CHUNKING"));   // XCLIENT no longer offered
            await s.ExpectAsync("MAIL FROM:<a@example.org>", "250 2.1.0 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var attributes = Client(login: "usér one");
            var reply = await client.XClientAsync(attributes, "client.example");
            Assert.Equal(220, reply!.Code);
            Assert.Empty(client.Capabilities.XClient);
            Assert.True(client.Capabilities.Chunking);
            Assert.Equal(attributes, client.XClientAttributes);
            Assert.Null(client.XClientRefusal);
            var mail = client.MailAsync("<a@example.org>");
            await client.FlushAsync();
            Assert.Equal(250, (await mail).Code);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task NothingIsSentWhenXClientIsNotOffered()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", "XFORWARD NAME ADDR");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            Assert.Null(await client.XClientAsync(Client(), "client.example"));
            Assert.Null(client.XClientAttributes);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Theory]
    [InlineData("550 5.7.0 Error: insufficient authorization")]
    [InlineData("501 5.5.4 Bad ADDR syntax: 192.0.2.7")]
    public async Task ARefusedXClientLeavesTheSessionAsItWas(string refusal)
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", PostfixXClient);
            Assert.StartsWith("XCLIENT HELO=client.example ", await s.ReadLineAsync());
            await s.ReplyAsync(refusal);
            // No second EHLO: the next command is the MAIL of the same session.
            await s.ExpectAsync("MAIL FROM:<>", "250 2.1.0 ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var reply = await client.XClientAsync(Client(), "client.example");
            Assert.Equal(int.Parse(refusal[..3]), reply!.Code);
            Assert.False(client.IsBroken);
            Assert.Same(reply, client.XClientRefusal);
            Assert.Null(client.XClientAttributes);
            Assert.NotEmpty(client.Capabilities.XClient);   // the old EHLO still holds
            var mail = client.MailAsync("<>");
            await client.FlushAsync();
            Assert.Equal(250, (await mail).Code);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task A421AnswerBreaksTheConnection()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", PostfixXClient);
            await s.ReadLineAsync();
            await s.ReplyAsync("421 4.3.0 fake.test Server local data error");
            s.Close();
        });

        await using var client = await server.ConnectAsync();
        var ex = await Assert.ThrowsAsync<DownstreamException>(() => client.XClientAsync(Client(), "client.example").AsTask());
        Assert.Equal(421, ex.Reply!.Code);
        Assert.True(client.IsBroken);
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task AVerdictOnTheClientIsReturnedAndTheSessionGoesOn()
    {
        // smtpd_delay_reject = no: the restarted session's greeting is the client restriction's reply.
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", PostfixXClient);
            await s.ReadLineAsync();
            await s.ReplyAsync("554 5.7.1 <unknown[192.0.2.7]>: Client host rejected: Access denied");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            var reply = await client.XClientAsync(Client(), "client.example");
            Assert.Equal(554, reply!.Code);
            Assert.Equal("5.7.1", reply.Enhanced);
            Assert.False(client.IsBroken);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task ARefusedEhloAfterXClientBreaksTheConnectionAndIsReturned()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", PostfixXClient);
            await s.ReadLineAsync();
            await s.ReplyAsync("220 fake.test ESMTP");
            Assert.Equal("EHLO bad.example", await s.ReadLineAsync());
            await s.ReplyAsync("550 5.7.1 <bad.example>: Helo command rejected: go away");
            await s.WaitForCloseAsync();
        });

        await using var client = await server.ConnectAsync();
        var reply = await client.XClientAsync(Client("bad.example"), "bad.example");
        Assert.Equal(550, reply!.Code);
        Assert.True(client.IsBroken);
        Assert.Null(client.XClientRefusal);
        await server.AssertScriptSucceededAsync();
    }

    [Theory]
    [InlineData(null)]
    [InlineData("two words")]
    [InlineData("")]
    public async Task WithoutAOneWordClientHeloTheGatewaysNameGreets(string? helo)
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("XCLIENT ADDR");
            await s.ExpectAsync("XCLIENT ADDR=192.0.2.7", "220 fake.test ESMTP");
            await s.ExpectAsync("EHLO gw.test", "250 fake.test");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
            Assert.Equal(220, (await client.XClientAsync(Client(), helo))!.Code);
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task LongValuesSplitTheCommandWithAddrLastAndOverlongOnesAreUnavailable()
    {
        string helo = new('h', 250);
        string login = new('l', 250);
        string tail = "NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=4711 DESTADDR=IPV6:2001:db8::25 DESTPORT=25";
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", PostfixXClient);
            await s.ExpectAsync($"XCLIENT HELO={helo} PROTO=ESMTP", "220 fake.test ESMTP");
            var second = await s.ReadLineAsync();
            Assert.Equal($"XCLIENT LOGIN={login} {tail}", second);
            Assert.True(second.Length <= 510, $"{second.Length} characters");
            await s.ReplyAsync("220 fake.test ESMTP");
            Assert.Equal($"EHLO {helo}", await s.ReadLineAsync());
            await s.SendAsync(Ehlo("fake.test", PostfixXClient));   // still authorized (the client is trusted too)

            // 86 "+XX" triplets are 258 characters of xtext, over Postfix's 255: the login goes as
            // unknown, and the shorter command fits in one line again.
            await s.ExpectAsync($"XCLIENT HELO={helo} PROTO=ESMTP LOGIN=[UNAVAILABLE] {tail}", "220 fake.test ESMTP");
            await s.ExpectAsync($"EHLO {helo}", "250 fake.test");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            Assert.Equal(220, (await client.XClientAsync(Client(helo, login), helo))!.Code);
            var changed = Client(helo, new string('\x01', 86));
            Assert.Equal(220, (await client.XClientAsync(changed, helo))!.Code);
            Assert.Equal(changed, client.XClientAttributes);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task HeloAndProtoGoFirstInUpperCaseWhateverTheOrderGivenAndABadNameSendsNothing()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", "XCLIENT NAME ADDR PROTO HELO");
            await s.ExpectAsync("XCLIENT PROTO=ESMTP HELO=client.example ADDR=192.0.2.7 NAME=[UNAVAILABLE]", "250 Ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
        {
            await Assert.ThrowsAsync<ArgumentException>(() => client.XClientAsync([new("HELO", "client.example"), new("AD DR", "192.0.2.7")], null).AsTask());
            Assert.Null(client.XClientAttributes);
            KeyValuePair<string, string>[] attributes =
                [new("addr", "192.0.2.7"), new("proto", "ESMTP"), new("PORT", "4711"), new("Name", ""), new("helo", "client.example")];
            Assert.Equal(250, (await client.XClientAsync(attributes, "client.example"))!.Code);
            Assert.Equal(attributes, client.XClientAttributes);
        }
        await server.AssertScriptSucceededAsync();
    }

    [Fact]
    public async Task AnOldServerThatAnswers250KeepsItsSession()
    {
        await using var server = FakeSmtpServer.Start(async s =>
        {
            await s.GreetAsync("PIPELINING", "XCLIENT NAME ADDR PROTO HELO");
            await s.ExpectAsync("XCLIENT HELO=client.example PROTO=ESMTP NAME=[UNAVAILABLE] ADDR=192.0.2.7", "250 Ok");
            await s.ExpectAsync("QUIT", "221 bye");
        });

        await using (var client = await server.ConnectAsync())
            Assert.Equal(250, (await client.XClientAsync(Client(), "client.example"))!.Code);
        await server.AssertScriptSucceededAsync();
    }
}
