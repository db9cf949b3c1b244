using System.Diagnostics;
using System.Text;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Quarantine;
using Xunit;

namespace Portcullis.Appliance.Tests.Quarantine;

// Root runs the quarantine CLI over a folder the service account can write (issue 11, items 5-8):
// entries are read only as regular files owned by root or the service user, never through a
// symlink; an envelope that cannot go back on the wire is a corrupt entry; nothing from the mail
// reaches the terminal as a control character; the folder is kept at 0700.
public sealed class QuarantineSafetyTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("portcullis-qs-").FullName;
    private readonly QuarantineStore _store;
    private static readonly byte[] Message = Encoding.ASCII.GetBytes("Subject: x\r\n\r\nbody\r\n");

    public QuarantineSafetyTests() => _store = new QuarantineStore(Path.Combine(_root, "quarantine"));

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private QuarantineEntry Add(string recipient = "c@d.test", string helo = "client.test") =>
        _store.Add(new QuarantineEntry { Time = DateTimeOffset.UtcNow, Virus = "Eicar", Sender = "a@b.test", Recipients = [recipient], Helo = helo }, new BytesContent(Message));

    private string SecretFile()
    {
        var secret = Path.Combine(_root, "shadow");
        File.WriteAllText(secret, "root:TOP-SECRET:19000::::::\n");
        File.SetUnixFileMode(secret, UnixFileMode.UserRead);
        return secret;
    }

    [Fact]
    public void A_message_that_is_a_symlink_is_refused()
    {
        var entry = Add();
        var eml = Path.Combine(_store.Folder, entry.Id + ".eml");
        File.Delete(eml);
        File.CreateSymbolicLink(eml, SecretFile());

        var e = Assert.Throws<QuarantineException>(() => { using var _ = _store.OpenMessage(entry.Id); });
        Assert.Contains("symbolic link", e.Message);
    }

    [Fact]
    public void Metadata_that_is_a_symlink_is_refused()
    {
        var entry = Add();
        var json = Path.Combine(_store.Folder, entry.Id + ".json");
        File.Delete(json);
        File.CreateSymbolicLink(json, SecretFile());

        var e = Assert.Throws<QuarantineException>(() => _store.Get(entry.Id));
        Assert.Contains("symbolic link", e.Message);
        Assert.DoesNotContain("TOP-SECRET", e.Message);
    }

    [Fact]
    public void A_fifo_under_a_message_name_is_refused_without_hanging()
    {
        var entry = Add();
        var eml = Path.Combine(_store.Folder, entry.Id + ".eml");
        File.Delete(eml);
        Run("mkfifo", eml);

        var e = Assert.Throws<QuarantineException>(() => { using var _ = _store.OpenMessage(entry.Id); });
        Assert.Contains("not a regular file", e.Message);
    }

    [Fact]
    public void A_file_owned_by_another_user_is_refused()
    {
        Assert.True(Environment.UserName == "root", "this test changes a file's owner, which needs root (the CI runs as root)");
        var entry = Add();
        var eml = Path.Combine(_store.Folder, entry.Id + ".eml");
        Run("chown", "65534", eml);   // nobody

        var e = Assert.Throws<QuarantineException>(() => { using var _ = _store.OpenMessage(entry.Id); });
        Assert.Contains("belongs to uid 65534", e.Message);
    }

    [Theory]
    [InlineData("victim@d.test\r\nRCPT TO:<other@d.test>")]
    [InlineData("victim@d.test\n")]
    [InlineData("victim@d.test\0")]
    [InlineData("not an address")]
    public void An_envelope_that_cannot_go_back_on_the_wire_is_a_corrupt_entry(string recipient)
    {
        var entry = Add(recipient);
        var e = Assert.Throws<QuarantineException>(() => _store.Get(entry.Id));
        Assert.Contains("is corrupt", e.Message);
        Assert.DoesNotContain('\r', e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(_store.List(), l => l.Id == entry.Id && l.Problem is not null);
    }

    [Fact]
    public void Terminal_escapes_are_written_as_text()
    {
        Assert.Equal("\\x1B[2J\\x1B]0;pwned\\x07 ok", TerminalText.Escape("\u001b[2J\u001b]0;pwned\u0007 ok"));
        Assert.Equal("a\\x0Db\\x0Ac\\x9Bd\\x7F", TerminalText.Escape("a\rb\nc\u009bd\u007f"));
        Assert.Equal("evil\\u202Etxt.exe", TerminalText.Escape("evil\u202Etxt.exe"));
        Assert.Equal("Grüße, 世界 \\ \"x\"", TerminalText.Escape("Grüße, 世界 \\ \"x\""));
    }

    [Fact]
    public void An_existing_lax_folder_is_tightened_to_0700()
    {
        Directory.CreateDirectory(_store.Folder);
        File.SetUnixFileMode(_store.Folder, (UnixFileMode)0b111_101_101);   // 0755
        _store.PrepareFolder();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(_store.Folder));
    }

    [Fact]
    public void A_folder_that_cannot_be_tightened_is_refused_with_the_reason()
    {
        // /proc/self is 0555 and its mode cannot be changed, not even by root.
        var store = new QuarantineStore("/proc/self");
        var e = Assert.Throws<IOException>(store.PrepareFolder);
        Assert.Contains("/proc/self has mode 0555 and cannot be made 0700", e.Message);
    }

    private static void Run(string tool, params string[] args)
    {
        var start = new ProcessStartInfo(tool) { UseShellExecute = false, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{tool} {string.Join(' ', args)}: {error}");
    }
}
