using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// [scan] action and the per-class overrides: reject, discard, strip, tag; banned attachments.
public sealed class ActionTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(15);

    private static string Unofficial(string name) => name + ".UNOFFICIAL";

    [Fact]
    public async Task Discard_answers_250_delivers_nothing_keeps_a_copy_and_tells_the_recipient()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c
            .Set("scan", "action", "discard")
            .Set("log", "folder", Path.Combine(c.Root, "log")));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        var sent = PolicyMessages.Plain("discard me", TestSignatures.Eicar);

        var reply = await RawTransaction.SendAsync(client, sent);

        Assert.Equal(250, reply.Code);
        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("discarded", log["action"]);
        Assert.Equal(Unofficial(TestSignatures.EicarName), log["virus"]);
        var id = log["quarantine"];
        Assert.Equal(sent, File.ReadAllBytes(Path.Combine(gateway.Config.QuarantineFolder, id + ".eml")));
        await downstream.Rsets.WaitForCountAsync(1, Wait, "the gateway's RSET to the downstream");

        var notice = await downstream.Messages.WaitForAsync(PolicyMessages.IsNotification, Wait, "the notification to the recipient");
        Assert.Equal([$"RCPT TO:<{TestMessages.Recipient}>"], notice.RcptCommands);
        var text = SmtpBytes.Text(notice.Content);
        Assert.Contains(id, text);
        Assert.Contains(TestSignatures.EicarName, text);
        Assert.DoesNotContain(downstream.Messages.Snapshot(), m => !PolicyMessages.IsNotification(m));

        // [log] folder: the same line in today's file.
        var logFile = Path.Combine(gateway.Config.Root, "log", $"portcullis-{DateTime.Now:yyyy-MM-dd}.log");
        Assert.Contains(log.Line, File.ReadAllText(logFile));
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Strip_replaces_the_infected_attachment_and_leaves_every_other_byte_as_sent()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c
            .Set("scan", "action", "strip")
            .Set("notification", "notify_recipients", "no"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        var text = PolicyMessages.TextPart("Hello,\r\n  odd  spacing\tand tabs stay.\r\n");
        var virus = PolicyMessages.Attachment("clam.exe", File.ReadAllBytes(TestSignatures.ClamExe));
        var clean = PolicyMessages.Attachment("report.pdf", TestMessages.Noise(3000, 7), "application/pdf");
        var sent = PolicyMessages.Multipart("strip me", "", text, virus, clean);

        var reply = await RawTransaction.SendAsync(client, sent);

        Assert.Equal(250, reply.Code);
        var delivered = (await downstream.Messages.WaitForCountAsync(1, Wait, "the stripped message"))[0].Content;
        var sentText = SmtpBytes.Text(sent);
        var deliveredText = SmtpBytes.Text(delivered);
        var cut = sentText.IndexOf(virus, StringComparison.Ordinal);
        var rest = sentText[(cut + virus.Length - 2)..]; // from the CRLF before the next boundary
        var headerEnd = deliveredText.IndexOf(sentText[..cut], StringComparison.Ordinal);
        Assert.True(headerEnd > 0, "the part of the message before the attachment was changed");
        Assert.EndsWith(rest, deliveredText);
        var replacement = deliveredText[(headerEnd + cut)..^rest.Length];
        Assert.Contains("Content-Type: text/plain", replacement);
        Assert.Contains("clam.exe", replacement);
        Assert.DoesNotContain(Convert.ToBase64String(File.ReadAllBytes(TestSignatures.ClamExe))[..40], deliveredText);
        var fields = PolicyMessages.HeaderFields(delivered);
        Assert.Equal($"Stripped ({Unofficial(TestSignatures.ClamExeName)})", Assert.Single(fields["X-Virus-Status"]));
        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("stripped", log["action"]);
        Assert.Contains(log["quarantine"], replacement);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Strip_falls_back_to_reject_when_the_virus_is_in_the_message_text()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "action", "strip"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var reply = await RawTransaction.SendAsync(client, PolicyMessages.Plain("body virus", TestSignatures.Eicar));

        Assert.Equal(554, reply.Code);
        Assert.Equal("5.7.1", reply.EnhancedCode);
        Assert.Equal("rejected", (await gateway.WaitForLogRecordAsync())["action"]);
        VirusTests.AssertNothingDelivered(downstream);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Tag_delivers_with_a_status_header_and_the_subject_prefix()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "action", "tag"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        var sent = PolicyMessages.Plain("tag me", TestSignatures.Eicar);

        var reply = await RawTransaction.SendAsync(client, sent);

        Assert.Equal(250, reply.Code);
        var delivered = (await downstream.Messages.WaitForCountAsync(1, Wait, "the tagged message"))[0].Content;
        var fields = PolicyMessages.HeaderFields(delivered);
        Assert.Equal($"Infected ({Unofficial(TestSignatures.EicarName)})", Assert.Single(fields["X-Virus-Status"]));
        Assert.Equal("[VIRUS] tag me", Assert.Single(fields["Subject"]));
        Assert.EndsWith(SmtpBytes.Text(sent).Replace("Subject: tag me", "Subject: [VIRUS] tag me"), SmtpBytes.Text(delivered));
        Assert.Equal("tagged", (await gateway.WaitForLogRecordAsync())["action"]);
        await gateway.StopAsync();
    }

    // One gateway, action = reject, every class set to something else; each message shows its class's action.
    [Fact]
    public async Task Each_class_follows_its_own_action()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c =>
        {
            PolicyMessages.WriteClassSignatures(c);
            c.Set("scan", "action", "reject")
                .Set("scan", "action_pua", "tag")
                .Set("scan", "action_heuristics", "discard")
                .Set("scan", "action_phishing", "tag")
                .Set("scan", "action_unofficial", "discard")
                .Set("scan", "action_banned", "tag")
                .Set("scan", "tag_subject_prefix", "\"{T} \"")
                .Set("notification", "notify_recipients", "no");
        });

        var sentCount = 0;
        async Task<(SmtpReply Reply, LogRecord Log)> Send(byte[] message)
        {
            await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
            var reply = await RawTransaction.SendAsync(client, message);
            return (reply, await NthLogRecordAsync(gateway, ++sentCount));
        }

        var cases = new (string Subject, byte[] Message, string Virus, string Action)[]
        {
            ("pua", PolicyMessages.Plain("pua", PolicyMessages.PuaText), Unofficial(PolicyMessages.PuaName), "tagged"),
            ("heur", PolicyMessages.Plain("heur", PolicyMessages.HeuristicsText), Unofficial(PolicyMessages.HeuristicsName), "discarded"),
            ("phish", PolicyMessages.Plain("phish", PolicyMessages.PhishingText), Unofficial(PolicyMessages.PhishingName), "tagged"),
            ("unofficial", PolicyMessages.Plain("unofficial", TestSignatures.Eicar), Unofficial(TestSignatures.EicarName), "discarded"),
            ("banned", PolicyMessages.Multipart("banned", "", PolicyMessages.TextPart("hi\r\n"), PolicyMessages.Attachment("run.bat", "echo hi"u8.ToArray())), "Banned.Extension.bat", "tagged"),
        };
        foreach (var (subject, message, virus, action) in cases)
        {
            var (reply, log) = await Send(message);
            Assert.True(reply.Code == 250, $"{subject}: {reply}");
            Assert.Equal((virus, action), (log["virus"], log["action"]));
        }

        var tagged = downstream.Messages.Snapshot().Select(m => PolicyMessages.HeaderFields(m.Content)["Subject"].Single()).ToArray();
        Assert.Equal(["{T} pua", "{T} phish", "{T} banned"], tagged);
        await gateway.StopAsync();
    }

    // The n-th per-message log line (1-based).
    internal static async Task<LogRecord> NthLogRecordAsync(GatewayProcess gateway, int n)
    {
        var lines = await gateway.Stdout.WaitUntilAsync(all => all.Count(l => LogRecord.TryParse(l) is not null) >= n, Wait, $"log line {n}");
        return lines.Select(LogRecord.TryParse).Where(r => r is not null).ElementAt(n - 1)!;
    }

    [Fact]
    public async Task Banned_names_are_refused_in_parts_in_zip_archives_and_as_double_extensions()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, c => c.Set("scan", "encrypted_archives", "block"));
        var harmless = "MZ harmless test bytes"u8.ToArray();
        var cases = new (byte[] Message, string Expected)[]
        {
            (PolicyMessages.Multipart("ext", "", PolicyMessages.TextPart("hi\r\n"), PolicyMessages.Attachment("setup.EXE", harmless)), "Banned.Extension.exe"),
            (PolicyMessages.Multipart("double", "", PolicyMessages.TextPart("hi\r\n"), PolicyMessages.Attachment("invoice.pdf.exe", harmless)), "Banned.DoubleExtension"),
            (PolicyMessages.Multipart("zip", "", PolicyMessages.TextPart("hi\r\n"),
                PolicyMessages.Attachment("docs.zip", PolicyMessages.Zip(("readme.txt", "x"u8.ToArray()), ("bin/invoice.pdf.scr", harmless)), "application/zip")), "Banned.DoubleExtension"),
            (PolicyMessages.Multipart("zipext", "", PolicyMessages.TextPart("hi\r\n"),
                PolicyMessages.Attachment("tools.zip", PolicyMessages.Zip(("tool.js", "x"u8.ToArray())), "application/zip")), "Banned.Extension.js"),
            (PolicyMessages.Multipart("type", "", PolicyMessages.TextPart("hi\r\n"), PolicyMessages.Attachment("data.bin", harmless, "application/x-msdownload")), "Banned.ContentType"),
        };
        foreach (var (message, expected) in cases)
        {
            await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
            var reply = await RawTransaction.SendAsync(client, message);
            Assert.True(reply.Code == 554, $"{expected}: {reply}");
            Assert.Contains(expected, reply.Text);
        }

        // Clean names pass.
        await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port))
        {
            var reply = await RawTransaction.SendAsync(client, PolicyMessages.Multipart("ok", "", PolicyMessages.TextPart("hi\r\n"),
                PolicyMessages.Attachment("invoice.pdf", harmless, "application/pdf"), PolicyMessages.Attachment("a.zip", PolicyMessages.Zip(("a.txt", harmless)), "application/zip")));
            Assert.Equal(250, reply.Code);
        }

        Assert.Single(downstream.Messages.Snapshot());
        await gateway.StopAsync();
    }
}
