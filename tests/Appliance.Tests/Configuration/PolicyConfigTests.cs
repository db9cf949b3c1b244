using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Policy;
using Xunit;

using static Portcullis.Appliance.Tests.Configuration.IniText;

namespace Portcullis.Appliance.Tests.Configuration;

// [scan] actions and attachment rules, [quarantine], [notification].
public sealed class PolicyConfigTests
{
    [Fact]
    public void Defaults()
    {
        var config = Load("");
        Assert.Equal(DetectionAction.Reject, config.Scan.Action);
        Assert.All(Enum.GetValues<DetectionClass>(), c => Assert.Equal(DetectionAction.Reject, config.Scan.ActionFor(c)));
        Assert.Equal("[VIRUS] ", config.Scan.TagSubjectPrefix);
        Assert.Contains("exe", config.Scan.BannedExtensions);
        Assert.True(config.Scan.BanDoubleExtensions);
        Assert.Equal(EncryptedArchivePolicy.Allow, config.Scan.EncryptedArchives);
        Assert.Equal(new QuarantineSection { Folder = "/var/lib/portcullis/quarantine", Copy = true, RetentionDays = 30 }, config.Quarantine);
        Assert.Equal("/etc/portcullis/templates", config.Notification.TemplateFolder);
        Assert.True(config.Notification.NotifyRecipients);
        Assert.False(config.Notification.NotifySender);
        Assert.Empty(config.Notification.NotifyList);
        Assert.Equal("postmaster@gw.test", config.Notification.SenderAddress("gw.test"));
        Assert.Equal("/var/spool/portcullis/outbox", config.General.OutboxFolder);
    }

    [Fact]
    public void EveryKeyIsRead()
    {
        var config = Load("""
            [scan]
            action = Tag
            action_pua = discard
            action_heuristics = strip
            action_phishing =
            action_unofficial = reject
            action_banned = strip
            tag_subject_prefix = "*** "
            banned_extensions = .exe, *.SCR js
            banned_content_types = audio/*, application/x-foo
            encrypted_archives = block
            [quarantine]
            folder = /srv/q/
            copy = no
            retention_days = 0
            [notification]
            smtp_server_address = mail.example.com
            smtp_server_port = 587
            sender = virus@example.com
            notify_list = a@example.com, b@example.com
            notify_recipients = no
            notify_sender = yes
            template_folder = /srv/templates
            """);
        var s = config.Scan;
        Assert.Equal(DetectionAction.Tag, s.Action);
        Assert.Equal(DetectionAction.Discard, s.ActionFor(DetectionClass.Pua));
        Assert.Equal(DetectionAction.Strip, s.ActionFor(DetectionClass.Heuristics));
        Assert.Equal(DetectionAction.Tag, s.ActionFor(DetectionClass.Phishing));
        Assert.Equal(DetectionAction.Reject, s.ActionFor(DetectionClass.Unofficial));
        Assert.Equal(DetectionAction.Strip, s.ActionFor(DetectionClass.Banned));
        Assert.Equal("*** ", s.TagSubjectPrefix);
        Assert.Equal(["exe", "scr", "js"], s.BannedExtensions);
        Assert.False(s.BanDoubleExtensions);
        Assert.Equal(["audio/*", "application/x-foo"], s.BannedContentTypes);
        Assert.Equal(EncryptedArchivePolicy.Block, s.EncryptedArchives);
        Assert.Equal(new QuarantineSection { Folder = "/srv/q", Copy = false, RetentionDays = 0 }, config.Quarantine);
        var n = config.Notification;
        Assert.Equal(("mail.example.com", 587, "virus@example.com"), (n.SmtpServerAddress, n.SmtpServerPort, n.Sender));
        Assert.Equal(["a@example.com", "b@example.com"], n.NotifyList);
        Assert.False(n.NotifyRecipients);
        Assert.True(n.NotifySender);
        Assert.Equal("/srv/templates", n.TemplateFolder);
    }

    [Fact]
    public void NoneTurnsTheAttachmentRulesOff()
    {
        var s = Load("[scan]\nbanned_extensions = none\nbanned_content_types = none\n").Scan;
        Assert.True(BannedAttachments.From(s).IsEmpty);
    }

    [Theory]
    [InlineData("[scan]\naction = quarantine", "[scan] action = \"quarantine\": expected one of reject, discard, strip, tag")]
    [InlineData("[scan]\naction_pua = bounce", "[scan] action_pua = \"bounce\": expected one of reject, discard, strip, tag (or empty to follow action)")]
    [InlineData("[scan]\nbanned_extensions = exe, ../x", "[scan] banned_extensions = \"exe, ../x\": expected a list of file extensions")]
    [InlineData("[scan]\nbanned_content_types = application", "[scan] banned_content_types = \"application\": expected a list of media types")]
    [InlineData("[scan]\nencrypted_archives = maybe", "[scan] encrypted_archives = \"maybe\": expected one of allow, block")]
    [InlineData("[quarantine]\nfolder = relative/q", "[quarantine] folder = \"relative/q\": expected an absolute folder path")]
    [InlineData("[quarantine]\ncopy = sometimes", "[quarantine] copy = \"sometimes\": expected yes or no")]
    [InlineData("[quarantine]\nretention_days = -1", "[quarantine] retention_days = \"-1\": expected a whole number from 0 to 36500")]
    [InlineData("[notification]\nsmtp_server_port = 0", "[notification] smtp_server_port = \"0\": expected a TCP port number")]
    [InlineData("[notification]\nsender = not an address", "[notification] sender = \"not an address\": expected a mail address")]
    [InlineData("[notification]\nnotify_list = a@example.com, nobody", "[notification] notify_list = \"a@example.com, nobody\": expected a list of mail addresses")]
    [InlineData("[notification]\nnotify_sender = perhaps", "[notification] notify_sender = \"perhaps\": expected yes or no")]
    [InlineData("[notification]\ntemplates = /x", "[notification] unknown key \"templates\"")]
    public void BadValuesNameFileSectionAndKey(string ini, string expected) =>
        Assert.StartsWith(Source + ": " + expected, SingleError(ini));
}
