using System.Text;
using MimeKit;
using Portcullis.Appliance.Queue;
using Xunit;

namespace Portcullis.Appliance.Tests.Queue;

public sealed class DeliveryStatusNotificationTests
{
    private static readonly DateTimeOffset Arrival = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);
    private static readonly DateTimeOffset Attempt = new(2026, 12, 1, 10, 5, 0, TimeSpan.Zero);

    private const string Original =
        "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: quarterly figures\r\n"
        + "Message-ID: <orig-1@example.org>\r\n\r\nThe figures are attached.\r\n";

    private static DsnRecipient Bob(string? notify = null, string? orcpt = null, string status = "5.1.1") =>
        new("bob@example.net", orcpt, notify, status, "550 5.1.1 <bob@example.net>: Recipient address rejected", "mail.example.net", Attempt);

    private static DsnReport Report(DsnKind kind = DsnKind.Failed, string sender = "alice@example.org", string? envId = null,
        string? ret = null, params DsnRecipient[] recipients) =>
        new(kind, "gw.example.net", sender, envId, ret, Arrival, recipients.Length > 0 ? recipients : [Bob()], "Q1234",
            kind == DsnKind.Delayed ? Arrival.AddDays(5) : null);

    private static byte[]? Build(DsnReport report, string original = Original) =>
        DeliveryStatusNotification.Build(report, new MemoryStream(Encoding.UTF8.GetBytes(original)));

    private static MimeMessage Parse(byte[]? dsn)
    {
        Assert.NotNull(dsn);
        return MimeMessage.Load(new MemoryStream(dsn));
    }

    private static (MultipartReport Report, TextPart Text, MessageDeliveryStatus Status, MimeEntity? Original) Parts(MimeMessage message)
    {
        var report = Assert.IsType<MultipartReport>(message.Body);
        Assert.Equal("delivery-status", report.ReportType);
        Assert.InRange(report.Count, 2, 3);
        return (report, Assert.IsType<TextPart>(report[0]), Assert.IsType<MessageDeliveryStatus>(report[1]), report.Count == 3 ? report[2] : null);
    }

    [Fact]
    public void FailureReportCarriesEveryRfc3464Field()
    {
        var dsn = Build(Report(envId: "QQ+2B1", recipients: Bob(orcpt: "rfc822;bob+2Bold@example.net")));
        var message = Parse(dsn);
        Assert.Equal("MAILER-DAEMON@gw.example.net", message.From.Mailboxes.Single().Address);
        Assert.Equal("alice@example.org", message.To.Mailboxes.Single().Address);
        Assert.Equal("Undelivered Mail Returned to Sender", message.Subject);
        Assert.Equal("auto-replied", message.Headers["Auto-Submitted"]);
        Assert.Equal("orig-1@example.org", message.InReplyTo);

        var (_, text, status, original) = Parts(message);
        Assert.Contains("<bob@example.net>: host mail.example.net said: 550 5.1.1 <bob@example.net>: Recipient address rejected", text.Text);
        Assert.Contains("Q1234", text.Text);

        Assert.Equal(2, status.StatusGroups.Count);
        var perMessage = status.StatusGroups[0];
        Assert.Equal("dns; gw.example.net", perMessage["Reporting-MTA"]);
        Assert.Equal("QQ+1", perMessage["Original-Envelope-Id"]);
        Assert.Equal("Tue, 01 Dec 2026 10:00:00 +0000", perMessage["Arrival-Date"]);
        Assert.Equal("Q1234", perMessage["X-Portcullis-Queue-ID"]);

        var bob = status.StatusGroups[1];
        Assert.Equal("rfc822; bob+old@example.net", bob["Original-Recipient"]);
        Assert.Equal("rfc822; bob@example.net", bob["Final-Recipient"]);
        Assert.Equal("failed", bob["Action"]);
        Assert.Equal("5.1.1", bob["Status"]);
        Assert.Equal("dns; mail.example.net", bob["Remote-MTA"]);
        Assert.Equal("smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected", bob["Diagnostic-Code"]);
        Assert.Equal("Tue, 01 Dec 2026 10:05:00 +0000", bob["Last-Attempt-Date"]);
        Assert.Null(bob["Will-Retry-Until"]);

        // RET absent in a failure report: the whole message, as Postfix does.
        var returned = Assert.IsType<MessagePart>(original);
        Assert.Equal("message/rfc822", returned.ContentType.MimeType);
        Assert.Equal("quarterly figures", returned.Message!.Subject);
        // The original goes back byte for byte.
        Assert.Contains(Original, Encoding.UTF8.GetString(dsn!), StringComparison.Ordinal);
    }

    [Fact]
    public void DelayReportSaysWhenRetriesEndAndReturnsHeadersOnly()
    {
        var message = Parse(Build(Report(DsnKind.Delayed, recipients: Bob(status: "4.4.1"))));
        Assert.Equal("Delayed Mail (still being retried)", message.Subject);
        var (_, text, status, original) = Parts(message);
        Assert.Contains("Sun, 06 Dec 2026 10:00:00 +0000", text.Text);
        var bob = status.StatusGroups[1];
        Assert.Equal("delayed", bob["Action"]);
        Assert.Equal("4.4.1", bob["Status"]);
        Assert.Equal("Sun, 06 Dec 2026 10:00:00 +0000", bob["Will-Retry-Until"]);
        var headers = Assert.IsType<TextRfc822Headers>(original);
        Assert.Equal("quarterly figures", headers.Message!.Subject);
        Assert.DoesNotContain("figures are attached", Encoding.UTF8.GetString(Build(Report(DsnKind.Delayed, recipients: Bob(status: "4.4.1")))!));
    }

    [Theory]
    [InlineData("HDRS", false, false)]
    [InlineData("hdrs", false, false)]
    [InlineData("FULL", false, true)]
    [InlineData("FULL", true, true)]
    [InlineData(null, false, true)]
    [InlineData(null, true, false)]
    public void RetChoosesTheWholeMessageOrItsHeaders(string? ret, bool delayed, bool full)
    {
        var kind = delayed ? DsnKind.Delayed : DsnKind.Failed;
        var dsn = Build(Report(kind, ret: ret, recipients: Bob(status: kind == DsnKind.Failed ? "5.1.1" : "4.4.1")));
        var original = Parts(Parse(dsn)).Original;
        if (full)
        {
            Assert.Equal("message/rfc822", Assert.IsType<MessagePart>(original).ContentType.MimeType);
            Assert.Contains("The figures are attached.", Encoding.UTF8.GetString(dsn!));
        }
        else
        {
            Assert.IsType<TextRfc822Headers>(original);
            Assert.DoesNotContain("The figures are attached.", Encoding.UTF8.GetString(dsn!));
        }
    }

    [Fact]
    public void LargeOriginalIsReturnedAsHeadersOnlyAndTheTextSaysSo()
    {
        var body = new StringBuilder(Original);
        while (body.Length < 5 * DeliveryStatusNotification.MaxReturnedBytes) body.Append(new string('x', 76)).Append("\r\n");
        var dsn = Build(Report(ret: "FULL"), body.ToString());
        Assert.True(dsn!.Length < 8 * 1024, $"a DSN of {dsn.Length} bytes for a large original");
        var (_, text, _, original) = Parts(Parse(dsn));
        Assert.Equal("quarterly figures", Assert.IsType<TextRfc822Headers>(original).Message!.Subject);
        Assert.Contains("only its header is returned", text.Text);
    }

    [Fact]
    public void HugeHeaderFieldIsLeftOutAndTheTextSaysSo()
    {
        var message = "Subject: x\r\nX-Long: " + new string('a', 3 * DeliveryStatusNotification.MaxReturnedBytes) + "\r\n\r\nbody\r\n";
        var dsn = Build(Report(), message);
        Assert.True(dsn!.Length < 2 * DeliveryStatusNotification.MaxReturnedBytes);
        var (_, text, _, returned) = Parts(Parse(dsn));
        Assert.Contains("only its first fields are returned", text.Text);
        Assert.Equal("x", Assert.IsType<TextRfc822Headers>(returned).Message!.Subject);
    }

    [Fact]
    public void HeaderBlockLongerThanTheLimitIsCutAtAFieldBoundary()
    {
        var header = new StringBuilder("Subject: many fields\r\n");
        for (int i = 0; header.Length < 2 * DeliveryStatusNotification.MaxReturnedBytes; i++) header.Append("X-Field-").Append(i).Append(": value\r\n");
        var dsn = Build(Report(ret: "HDRS"), header + "\r\nbody\r\n");
        var returned = Assert.IsType<TextRfc822Headers>(Parts(Parse(dsn)).Original);
        Assert.Equal("many fields", returned.Message!.Subject);
        Assert.All(returned.Message!.Headers.Where(h => h.Field.StartsWith("X-Field-", StringComparison.Ordinal)), h => Assert.Equal("value", h.Value));
    }

    [Theory]
    [InlineData("NEVER", false, false)]
    [InlineData("NEVER", true, false)]
    [InlineData("FAILURE", false, true)]
    [InlineData("FAILURE", true, false)]
    [InlineData("DELAY", false, false)]
    [InlineData("DELAY", true, true)]
    [InlineData("SUCCESS", false, false)]
    [InlineData("failure,delay", true, true)]
    [InlineData("SUCCESS,FAILURE", false, true)]
    [InlineData(null, false, true)]
    [InlineData(null, true, true)]
    public void NotifyDecidesPerRecipient(string? notify, bool delayed, bool sent)
    {
        var kind = delayed ? DsnKind.Delayed : DsnKind.Failed;
        var status = kind == DsnKind.Failed ? "5.1.1" : "4.4.1";
        var carol = new DsnRecipient("carol@example.net", null, "NEVER", status, "550 no", null, Attempt);
        var dsn = Build(Report(kind, recipients: [Bob(notify, status: status), carol]));
        if (!sent)
        {
            Assert.Null(dsn);
            return;
        }

        var groups = Parts(Parse(dsn)).Status.StatusGroups;
        Assert.Equal(2, groups.Count);
        Assert.Equal("rfc822; bob@example.net", groups[1]["Final-Recipient"]);
    }

    [Theory]
    [InlineData("")]
    [InlineData("MAILER-DAEMON@elsewhere.example")]
    [InlineData("mailer-daemon@gw.example.net")]
    [InlineData("postmaster@gw.example.net")]
    public void NoReportToTheNullSenderOrTheGatewaysOwnSenders(string sender) => Assert.Null(Build(Report(sender: sender)));

    [Theory]
    [InlineData("\"john doe\"@example.org")]
    [InlineData("o'brien+tag@example.org")]
    public void QuotedAndUnusualSendersGetTheirReport(string sender)
    {
        var message = Parse(Build(Report(sender: sender)));
        Assert.Equal(sender, message.To.Mailboxes.Single().Address);
    }

    [Theory]
    [InlineData("bob@example.org\r\nBcc: x@y")]
    [InlineData("<<>>")]
    public void SenderThatIsNoAddressGetsNoReportAndNoCrash(string sender) => Assert.Null(Build(Report(sender: sender)));

    [Fact]
    public void PostmasterOfAnotherDomainGetsItsReport() => Assert.NotNull(Build(Report(sender: "postmaster@example.org")));

    [Theory]
    [InlineData("Auto-Submitted: auto-replied\r\n", false)]
    [InlineData("Auto-Submitted: auto-generated; owner=x\r\n", false)]
    [InlineData("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n", false)]
    [InlineData("Auto-Submitted: no\r\n", true)]
    [InlineData("Precedence: list\r\nList-Id: <l.example.org>\r\n", true)]
    public void AutoSubmittedOriginalsGetNoReportButListMailDoes(string field, bool sent)
    {
        var dsn = Build(Report(), field + Original);
        Assert.Equal(sent, dsn is not null);
    }

    [Fact]
    public void SmtpUtf8AddressesMakeAGlobalDeliveryStatus()
    {
        var recipient = new DsnRecipient("用户@例子.广告", "utf-8;+E7+94+A8\\x{6237}@例子.广告", null, "5.1.1", "550 5.1.1 unknown", "mx.例子.广告", Attempt);
        var dsn = Build(Report(sender: "josé@example.org", recipients: recipient),
            "From: josé@example.org\r\nSubject: café\r\n\r\nhello\r\n");
        var message = Parse(dsn);
        Assert.Equal("josé@example.org", message.To.Mailboxes.Single().Address);
        var (_, _, status, original) = Parts(message);
        Assert.Equal("message/global-delivery-status", status.ContentType.MimeType);
        var group = status.StatusGroups[1];
        Assert.Equal("utf-8; 用户@例子.广告", group["Final-Recipient"]);
        Assert.Equal("utf-8; 用户@例子.广告", group["Original-Recipient"]);
        Assert.Equal("dns; mx.例子.广告", group["Remote-MTA"]);
        var returned = Assert.IsType<MessagePart>(original);
        Assert.Equal("message/global", returned.ContentType.MimeType);
        Assert.Equal("café", returned.Message!.Subject);
        // RFC 6533: raw UTF-8, never RFC 2047 encoded-words, in the report fields.
        Assert.DoesNotContain("=?utf-8?", Encoding.UTF8.GetString(dsn!), StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void AsciiReportStaysSevenBitAndNonAsciiDiagnosticsAreReplaced()
    {
        var recipient = new DsnRecipient("bob@example.net", null, null, "5.7.1", "550 5.7.1 refusé\r\n550 second line", null, null);
        var dsn = Build(Report(recipients: recipient));
        var status = Parts(Parse(dsn)).Status;
        Assert.Equal("message/delivery-status", status.ContentType.MimeType);
        Assert.Equal("smtp; 550 5.7.1 refus? 550 second line", status.StatusGroups[1]["Diagnostic-Code"]);
        Assert.Null(status.StatusGroups[1]["Remote-MTA"]);
        Assert.Null(status.StatusGroups[1]["Last-Attempt-Date"]);
        Assert.True(Ascii.IsValid(dsn!));
    }

    [Fact]
    public void EightBitOriginalIsDeclaredEightBit()
    {
        var dsn = Build(Report(), "Subject: hi\r\n\r\ncaf\u00e9\r\n");
        var returned = Assert.IsType<MessagePart>(Parts(Parse(dsn)).Original);
        Assert.Equal("8bit", returned.Headers[HeaderId.ContentTransferEncoding]);
        Assert.Null(Assert.IsType<MessagePart>(Parts(Parse(Build(Report()))).Original).Headers[HeaderId.ContentTransferEncoding]);
    }

    [Theory]
    [InlineData("+2B+3D", "+=")]
    [InlineData("abc", "abc")]
    [InlineData("a+", "a+")]
    [InlineData("a+4", "a+4")]
    [InlineData("a+ZZb", "a+ZZb")]
    [InlineData("+C3+A9t+C3+A9", "été")]
    public void EnvIdIsDecodedFromXText(string xtext, string decoded)
    {
        Assert.Equal(decoded, DeliveryStatusNotification.DecodeXText(xtext));
        var dsn = Build(Report(envId: xtext));
        var field = Parts(Parse(dsn)).Status.StatusGroups[0]["Original-Envelope-Id"];
        Assert.Equal(Ascii.IsValid(decoded) ? decoded : "?t?", field);
    }

    [Theory]
    [InlineData(false, "2.0.0", "5.0.0")]
    [InlineData(false, "4.4.7", "4.4.7")]
    [InlineData(true, "5.1.1", "4.0.0")]
    [InlineData(false, "garbage", "5.0.0")]
    public void StatusMatchesTheAction(bool delayed, string given, string reported)
    {
        var kind = delayed ? DsnKind.Delayed : DsnKind.Failed;
        var dsn = Build(Report(kind, recipients: Bob(status: given)));
        Assert.Equal(reported, Parts(Parse(dsn)).Status.StatusGroups[1]["Status"]);
    }

    [Fact]
    public void HeaderInjectionThroughEnvelopeValuesIsImpossible()
    {
        var recipient = new DsnRecipient("bob@example.net", "rfc822;bob+0D+0ABcc:+20x@y", null, "5.1.1", "550 x\r\nBcc: evil@example.com", "mx\r\nX: y", Attempt);
        var dsn = Build(Report(envId: "id+0D+0AX-Evil:+201", recipients: recipient));
        var groups = Parts(Parse(dsn)).Status.StatusGroups;
        Assert.Null(groups[0]["X-Evil"]);
        Assert.Null(groups[1]["Bcc"]);
        Assert.Null(groups[1]["X"]);
        Assert.Equal("smtp; 550 x Bcc: evil@example.com", groups[1]["Diagnostic-Code"]);
    }

    [Fact]
    public void DiagnosticCodeAlreadyTypedSmtpIsNotTypedTwice()
    {
        var recipient = new DsnRecipient("bob@example.net", null, null, "5.1.1", "smtp; 550 5.1.1 unknown user", "mx", Attempt);
        var (_, text, status, _) = Parts(Parse(Build(Report(recipients: recipient))));
        Assert.Equal("smtp; 550 5.1.1 unknown user", status.StatusGroups[1]["Diagnostic-Code"]);
        Assert.Contains("host mx said: 550 5.1.1 unknown user", text.Text);
    }

    [Fact]
    public void EmptyOriginalStillGivesAReport()
    {
        var (_, _, status, original) = Parts(Parse(Build(Report(), "")));
        Assert.Equal(2, status.StatusGroups.Count);
        Assert.Null(original);
    }
}
