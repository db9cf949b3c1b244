using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Notifications;
using Xunit;

namespace Portcullis.Appliance.Tests.Notifications;

public sealed class MessageTemplateTests
{
    private static readonly Dictionary<string, string> Values = new() { ["virus"] = "Eicar", ["subject"] = "hi\r\nBcc: evil@x", ["sender"] = "a@b" };

    private static MessageTemplate Parse(string text, bool withSubject = false)
    {
        var errors = new List<string>();
        var template = MessageTemplate.Parse("t.txt", text, withSubject, "/t/t.txt", errors);
        Assert.True(template is not null, string.Join("\n", errors));
        return template;
    }

    [Fact]
    public void PlaceholdersAreReplacedAndBracesEscaped() =>
        Assert.Equal("found Eicar {virus} from a@b}\r\nend", Parse("found {virus} {{virus}} from {sender}}\nend").RenderBody(Values));

    [Fact]
    public void ControlCharactersInValuesBecomeSpaces() =>
        Assert.Equal("[hi  Bcc: evil@x]", Parse("[{subject}]").RenderBody(Values));

    [Fact]
    public void NotificationTemplatesStartWithASubject()
    {
        var template = Parse("Subject: Virus {virus}\n\nbody {sender}\n", withSubject: true);
        Assert.Equal("Virus Eicar", template.RenderSubject(Values));
        Assert.Equal("body a@b\r\n", template.RenderBody(Values));
    }

    [Theory]
    [InlineData("hello {viruses}", "line 1: unknown placeholder {viruses}")]
    [InlineData("a\nb {Virus}", "line 2: unknown placeholder {Virus}")]
    [InlineData("open { brace", "line 1: \"{\" without a closing \"}\"")]
    public void UnknownPlaceholdersAreErrorsNamingFileAndLine(string text, string expected)
    {
        var errors = new List<string>();
        Assert.Null(MessageTemplate.Parse("t.txt", text, false, "/t/t.txt", errors));
        Assert.Contains(errors, e => e.StartsWith("/t/t.txt: " + expected, StringComparison.Ordinal));
    }

    [Fact]
    public void MissingSubjectLineIsAnError()
    {
        var errors = new List<string>();
        Assert.Null(MessageTemplate.Parse("n.txt", "Hello\n\nbody", true, "/t/n.txt", errors));
        Assert.Contains("Subject", Assert.Single(errors));
    }

    [Fact]
    public void SetFallsBackToBuiltInFilesAndReportsBadOnes()
    {
        var folder = Path.Combine(Path.GetTempPath(), "portcullis-templates-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            var set = TemplateSet.Load(folder);
            Assert.Equal(5, set.BuiltIn.Count);
            Assert.Contains("{", File.ReadAllText(ShippedTemplate("attachment.txt")));
            Assert.True(set.NotifyAdministrator.HasSubject);

            File.WriteAllText(Path.Combine(folder, TemplateSet.NotifySenderFile), "Subject: x\n\n{nope}\n");
            var error = Assert.Throws<ConfigException>(() => TemplateSet.Load(folder));
            Assert.Contains(Path.Combine(folder, TemplateSet.NotifySenderFile) + ": line 3: unknown placeholder {nope}", error.Message);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void ShippedTemplatesLoad()
    {
        var set = TemplateSet.Load(Path.GetDirectoryName(ShippedTemplate("attachment.txt"))!);
        Assert.Empty(set.BuiltIn);
    }

    private static string ShippedTemplate(string name, [System.Runtime.CompilerServices.CallerFilePath] string source = "")
    {
        for (var dir = new DirectoryInfo(Path.GetDirectoryName(source)!); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Appliance.sln")))
                return Path.Combine(dir.FullName, "rootfs", "etc", "portcullis", "templates", name);
        }

        throw new InvalidOperationException("Appliance.sln not found");
    }
}
