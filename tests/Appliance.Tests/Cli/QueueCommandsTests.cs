using System.Text;
using System.Text.Json;
using Portcullis.Appliance.Cli;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Queue;
using Xunit;

namespace Portcullis.Appliance.Tests.Cli;

// The queue verbs on a store in a temporary folder, called as the command line calls them.
public sealed class QueueCommandsTests : IDisposable
{
    private static readonly DateTimeOffset Arrival = new(2026, 12, 6, 5, 0, 0, TimeSpan.Zero);
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("portcullis-queuecli-");
    private readonly string _ini;
    private readonly QueueStore _store;

    public QueueCommandsTests()
    {
        _ini = Path.Combine(_root.FullName, "portcullis.ini");
        File.WriteAllText(_ini, $"[general]\nqueue_folder = {_root.FullName}\n");
        _store = new QueueStore(QueueStore.FolderFor(_root.FullName), 1L << 30);
    }

    public void Dispose() => _root.Delete(recursive: true);

    private QueueEntry Queue(string sender = "alice@example.org", params string[] recipients) =>
        _store.Add(new QueueEntry
        {
            Sender = sender,
            Recipients = (recipients.Length > 0 ? recipients : ["bob@example.net"])
                .Select(r => new QueuedRecipient { Address = r, Notify = "FAILURE", OriginalRecipient = "rfc822;" + r }).ToArray(),
            Ret = "HDRS",
            EnvId = "env-1",
            ClientAddress = "192.0.2.7",
            Helo = "client.test",
        }, "Received: from client.test\r\n"u8, new BytesContent(Encoding.ASCII.GetBytes("Subject: figures\r\n\r\nbody line\r\n")), Arrival);

    private (int Exit, string Output, string Error) Run(string verb, string? id = null, bool json = false)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var exit = QueueCommands.Run(verb, _ini, id, json, output, error);
        return (exit, output.ToString(), error.ToString());
    }

    [Fact]
    public void ListShowsEachEntryWithItsRecipientsAndTotals()
    {
        var entry = Queue("alice@example.org", "bob@example.net", "carol@example.net");
        var (exit, output, error) = Run("list");
        Assert.Equal(0, exit);
        Assert.Equal("", error);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith(entry.Id + "  ", lines[0], StringComparison.Ordinal);
        Assert.Contains("<alice@example.org>", lines[0], StringComparison.Ordinal);
        Assert.Contains("attempts 0", lines[0], StringComparison.Ordinal);
        Assert.Contains(entry.Size.ToString(System.Globalization.CultureInfo.InvariantCulture), lines[0], StringComparison.Ordinal);
        Assert.Equal("    <bob@example.net>  pending", lines[1]);
        Assert.Equal("    <carol@example.net>  pending", lines[2]);
        Assert.Equal($"1 message, {entry.Size} bytes", lines[^1]);
    }

    [Fact]
    public void EmptyOrMissingQueueSaysSo()
    {
        var (exit, output, _) = Run("list");
        Assert.Equal(0, exit);
        Assert.Equal("the queue is empty\n", output.ReplaceLineEndings("\n"));
        var (jsonExit, json, _) = Run("list", json: true);
        Assert.Equal(0, jsonExit);
        Assert.Equal(JsonValueKind.Array, JsonDocument.Parse(json).RootElement.ValueKind);
        Assert.Equal(0, JsonDocument.Parse(json).RootElement.GetArrayLength());
    }

    [Fact]
    public void JsonListHasTheEnvelopeAndDeliveryState()
    {
        var first = Queue();
        var second = Queue("dave@example.org", "erin@example.net");
        _store.Hold(second.Id);
        var (exit, output, _) = Run("list", json: true);
        Assert.Equal(0, exit);
        var entries = JsonDocument.Parse(output).RootElement;
        Assert.Equal(2, entries.GetArrayLength());
        // Both arrived in the same millisecond: the order between them is the random part of the id.
        JsonElement ById(string id) => entries.EnumerateArray().Single(x => x.GetProperty("id").GetString() == id);
        var e = ById(first.Id);
        Assert.Equal("alice@example.org", e.GetProperty("sender").GetString());
        Assert.Equal(first.Size, e.GetProperty("size").GetInt64());
        Assert.Equal(Arrival, e.GetProperty("arrival").GetDateTimeOffset());
        Assert.Equal(0, e.GetProperty("attempts").GetInt32());
        Assert.Equal(Arrival, e.GetProperty("next_attempt").GetDateTimeOffset());
        Assert.Equal(JsonValueKind.Null, e.GetProperty("last_attempt").ValueKind);
        Assert.Equal("", e.GetProperty("last_reply").GetString());
        Assert.False(e.GetProperty("held").GetBoolean());
        var recipient = Assert.Single(e.GetProperty("recipients").EnumerateArray());
        Assert.Equal("bob@example.net", recipient.GetProperty("address").GetString());
        Assert.Equal("pending", recipient.GetProperty("state").GetString());
        Assert.Equal("FAILURE", recipient.GetProperty("notify").GetString());
        Assert.Equal("rfc822;bob@example.net", recipient.GetProperty("original_recipient").GetString());
        Assert.True(ById(second.Id).GetProperty("held").GetBoolean());
        Assert.False(e.TryGetProperty("pending", out _));
    }

    [Fact]
    public void ShowPrintsTheEnvelopeAndTheHeaderButNotTheBody()
    {
        var entry = Queue();
        var (exit, output, _) = Run("show", entry.Id);
        Assert.Equal(0, exit);
        Assert.Contains($"id:             {entry.Id}\n", output, StringComparison.Ordinal);
        Assert.Contains("sender:         <alice@example.org>\n", output, StringComparison.Ordinal);
        Assert.Contains("client address: 192.0.2.7\n", output, StringComparison.Ordinal);
        Assert.Contains("dsn:            RET=HDRS ENVID=env-1\n", output, StringComparison.Ordinal);
        Assert.Contains("recipient:      <bob@example.net> pending NOTIFY=FAILURE ORCPT=rfc822;bob@example.net\n", output, StringComparison.Ordinal);
        Assert.Contains("\nReceived: from client.test\nSubject: figures\n", output, StringComparison.Ordinal);
        Assert.DoesNotContain("body line", output, StringComparison.Ordinal);
    }

    [Fact]
    public void HoldReleaseAndDeleteChangeTheStore()
    {
        var entry = Queue();
        Assert.Equal(0, Run("hold", entry.Id).Exit);
        Assert.True(_store.Find(entry.Id)!.Held);
        Assert.Contains("HELD", Run("list").Output, StringComparison.Ordinal);

        var (released, output, _) = Run("release", entry.Id);
        Assert.Equal(0, released);
        Assert.Equal($"released {entry.Id} from <alice@example.org> to <bob@example.net>\n", output.ReplaceLineEndings("\n"));
        Assert.False(_store.Find(entry.Id)!.Held);

        Assert.Equal(0, Run("delete", entry.Id).Exit);
        Assert.Null(_store.Find(entry.Id));
        Assert.Empty(Directory.EnumerateFiles(_store.Folder));
    }

    [Theory]
    [InlineData("show")]
    [InlineData("hold")]
    [InlineData("release")]
    [InlineData("delete")]
    public void UnknownIdIsAClearErrorAndExit1(string verb)
    {
        Queue();
        var missing = "20261206050000000-abcdef";
        var (exit, output, error) = Run(verb, missing);
        Assert.Equal(QueueCommands.ExitFailed, exit);
        Assert.Equal("", output);
        Assert.Equal($"portcullis: no queue entry {missing} in {_store.Folder}\n", error.ReplaceLineEndings("\n"));
    }

    [Theory]
    [InlineData("show", "../../etc/passwd")]
    [InlineData("delete", "*")]
    [InlineData("hold", "20261206")]
    public void MalformedIdIsRefusedBeforeTheStoreIsTouched(string verb, string id)
    {
        var entry = Queue();
        var (exit, _, error) = Run(verb, id);
        Assert.Equal(QueueCommands.ExitFailed, exit);
        Assert.Contains("is not a queue id", error, StringComparison.Ordinal);
        Assert.NotNull(_store.Find(entry.Id));
    }

    [Fact]
    public void AnEntryTheGatewayIsDeliveringIsBusyNotBroken()
    {
        var entry = Queue();
        using (var lease = _store.TryLease(entry.Id))
        {
            Assert.NotNull(lease);
            var (exit, _, error) = Run("delete", entry.Id);
            Assert.Equal(QueueCommands.ExitFailed, exit);
            Assert.Contains("busy", error, StringComparison.Ordinal);
        }

        Assert.NotNull(_store.Find(entry.Id));
    }

    [Fact]
    public void BadConfigurationExits78()
    {
        File.WriteAllText(_ini, "[queue]\nmode = sometimes\n");
        Assert.Equal(CommandLine.ExitConfig, Run("list").Exit);
    }

    [Fact]
    public async Task CommandLineParsesTheVerbsAndRefusesAMissingId()
    {
        var entry = Queue();
        Assert.Equal(0, await CommandLine.RunAsync(["queue", "hold", entry.Id, "--config", _ini]));
        Assert.True(_store.Find(entry.Id)!.Held);
        Assert.Equal(CommandLine.ExitUsage, await CommandLine.RunAsync(["queue", "hold", "--config", _ini]));
        Assert.Equal(CommandLine.ExitUsage, await CommandLine.RunAsync(["queue", "list", "--bogus", "--config", _ini]));
    }

    [Fact]
    public async Task FlushWithoutARunningGatewaySaysSoAndFails()
    {
        File.WriteAllText(_ini, $"[general]\nqueue_folder = {_root.FullName}\ncontrol_socket = {Path.Combine(_root.FullName, "control.sock")}\n");
        Assert.Equal(ControlClient.ExitUnavailable, await CommandLine.RunAsync(["queue", "flush", "--config", _ini]));
    }
}
