using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// README's other two Postfix recipes against a private Postfix: the gateway as Postfix's
// before-queue smtpd_proxy_filter, and as an after-queue content_filter with action = discard.
// Postfix takes the mail on its own port; the gateway hands clean mail back to a second smtpd
// ("reinjection", no filter) that queues it for the discard transport.
public sealed class PostfixFilterRecipesTests(ITestOutputHelper output)
{
    private static string Reinjection(int port) => $"""
        127.0.0.1:{port} inet n - n - - smtpd
          -o content_filter=
          -o smtpd_proxy_filter=
          -o smtpd_authorized_xforward_hosts=127.0.0.0/8
          -o smtpd_client_restrictions=
          -o smtpd_relay_restrictions=
          -o smtpd_recipient_restrictions=permit_mynetworks,reject
          -o mynetworks=127.0.0.0/8
          -o receive_override_options=no_unknown_recipient_checks

        """;

    private static async Task<SmtpReply> SendAsync(int port, byte[] message)
    {
        await using var client = await RawSmtpClient.ConnectAsync(port);
        Assert.Equal(220, client.Banner.Code);
        Assert.Equal(250, (await client.EhloAsync("client.example")).Code);
        Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<sender@example.org>")).Code);
        Assert.Equal(250, (await client.CommandAsync("RCPT TO:<user@dest.test>")).Code);
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(SmtpBytes.DataPayload(message));
        var final = await client.ReadReplyAsync();
        await client.CommandAsync("QUIT");
        return final;
    }

    private static Task<byte[]> InfectedAsync() => TestMessages.WireBytesOfAsync(
        TestMessages.WithAttachment("infected", "see attachment\r\n", "clam.exe", File.ReadAllBytes(TestSignatures.ClamExe)));

    private static string QueueId(SmtpReply reply) => reply.Text[(reply.Text.LastIndexOf(' ') + 1)..];

    [Fact]
    public async Task As_a_before_queue_smtpd_proxy_filter_the_client_hears_the_gateways_verdict()
    {
        int reinjection = GatewayIni.FreePort();
        await using var gateway = await GatewayProcess.StartAsync(output, reinjection, ini => ini.Set("general", "smtp_server_xclient", "no"));
        await using var postfix = PrivatePostfix.Start(output, "",
            smtpdOptions: $"-o smtpd_proxy_filter=127.0.0.1:{gateway.Port}\n-o smtpd_proxy_timeout=60s",
            extraMasterCf: Reinjection(reinjection));

        var clean = await SendAsync(postfix.Port, TestMessages.Plain("clean", "hello"));
        Assert.True(clean.Code == 250, $"{clean}");
        // The proxy's own queue id is the one the reinjection smtpd gave: the message was queued once.
        await postfix.WaitForLogLineAsync(l => l.Contains($"{QueueId(clean)}: to=<user@dest.test>") && l.Contains("status=sent"), "the clean message's delivery");

        var infected = await SendAsync(postfix.Port, await InfectedAsync());
        Assert.Equal(554, infected.Code);
        Assert.Contains(TestSignatures.ClamExeName, infected.Text);
        var record = await gateway.WaitForLogRecordAsync(r => r.Get("action") == "rejected");
        Assert.Equal("127.0.0.1", record["client"]);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task As_an_after_queue_content_filter_with_discard_infected_mail_is_dropped_without_a_bounce()
    {
        int reinjection = GatewayIni.FreePort();
        await using var gateway = await GatewayProcess.StartAsync(output, reinjection, ini => ini
            .Set("general", "smtp_server_xclient", "no")
            .Set("scan", "action", "discard")
            .Set("scan", "on_error", "tempfail"));
        await using var postfix = PrivatePostfix.Start(output, "",
            extraMainCf: $"content_filter = portcullis:[127.0.0.1]:{gateway.Port}\n",
            extraMasterCf: $"""
                portcullis unix - - n - 10 smtp
                  -o smtp_send_xforward_command=yes
                  -o disable_mime_output_conversion=yes

                """ + Reinjection(reinjection));

        var clean = await SendAsync(postfix.Port, TestMessages.Plain("clean", "hello"));
        Assert.Equal(250, clean.Code);
        // Through the gateway (relay=...:gateway port) and queued again by the reinjection smtpd.
        var filtered = await postfix.WaitForLogLineAsync(l => l.Contains($"{QueueId(clean)}: to=<user@dest.test>, relay=127.0.0.1[127.0.0.1]:{gateway.Port}"),
            "the clean message passing the gateway");
        Assert.Matches(@"status=sent \(250 2\.0\.0 Ok: \d+ bytes queued as \w+\)", filtered);

        var infected = await SendAsync(postfix.Port, await InfectedAsync());
        Assert.Equal(250, infected.Code);   // Postfix accepted it before anyone scanned it
        var dropped = await postfix.WaitForLogLineAsync(l => l.Contains($"{QueueId(infected)}: to=<user@dest.test>, relay=127.0.0.1[127.0.0.1]:{gateway.Port}"),
            "the infected message passing the gateway");
        Assert.Contains("status=sent (250 2.0.0 Ok)", dropped);
        var record = await gateway.WaitForLogRecordAsync(r => r.Get("action") == "discarded");
        Assert.Contains(TestSignatures.ClamExeName, record["virus"]);
        await postfix.WaitForLogLineAsync(l => l.Contains($"{QueueId(infected)}: removed"), "the infected message leaving the queue");
        // No bounce to the (probably forged) sender: nothing bounced, no notification generated.
        Assert.DoesNotContain("status=bounced", postfix.Log());
        Assert.DoesNotContain("sender non-delivery notification", postfix.Log());
        await gateway.StopAsync();
    }
}
