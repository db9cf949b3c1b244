using System.Text;
using Portcullis.Appliance.Gateway;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Queue;
using Xunit;

namespace Portcullis.Appliance.Tests.Queue;

public sealed class QueueStoreTests : IDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("portcullis-queue-");
    private static readonly DateTimeOffset Now = new(2026, 12, 6, 5, 0, 0, TimeSpan.Zero);

    public void Dispose() => _root.Delete(recursive: true);

    private QueueStore NewStore(long maxSize = 1L << 30) => new(QueueStore.FolderFor(_root.FullName), maxSize);

    private static QueueEntry Envelope(params string[] recipients) => new()
    {
        Sender = "alice@example.org",
        Recipients = recipients.Select(r => new QueuedRecipient { Address = r, Notify = "FAILURE", OriginalRecipient = "rfc822;" + r }).ToArray(),
        Ret = "HDRS",
        EnvId = "env-1",
        ClientAddress = "192.0.2.7",
        Helo = "client.test",
        Session = "ABC.1",
    };

    private static BytesContent Body(string text) => new(Encoding.ASCII.GetBytes(text));

    [Fact]
    public void AddedEntryIsListedWithItsMessageAndEnvelope()
    {
        var store = NewStore();
        var added = store.Add(Envelope("bob@example.net", "carol@example.net"), "X-Trace: 1\r\n"u8, Body("Subject: hi\r\n\r\nbody\r\n"), Now);

        Assert.True(QueueStore.IsValidId(added.Id));
        var found = Assert.Single(store.List());
        Assert.Equal(added with { Recipients = [] }, found with { Recipients = [] });
        Assert.Equal(added.Recipients, found.Recipients);
        Assert.Equal(["bob@example.net", "carol@example.net"], found.Recipients.Select(r => r.Address));
        Assert.Equal("rfc822;bob@example.net", found.Recipients[0].OriginalRecipient);
        Assert.Equal(("HDRS", "env-1"), (found.Ret, found.EnvId));
        Assert.All(found.Recipients, r => Assert.Equal(RecipientState.Pending, r.State));
        using (var message = new StreamReader(store.OpenMessage(added.Id)))
            Assert.Equal("X-Trace: 1\r\nSubject: hi\r\n\r\nbody\r\n", message.ReadToEnd());
        Assert.Equal(added.Size, store.Bytes);
        Assert.Equal(1, store.Count);
    }

    [Fact]
    public void FilesAreOwnerOnlyInAnOwnerOnlyFolder()
    {
        var store = NewStore();
        var added = store.Add(Envelope("bob@example.net"), [], Body("x\r\n"), Now);

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(store.Folder));
        foreach (var extension in new[] { QueueStore.MessageExtension, QueueStore.EntryExtension })
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(store.Folder, added.Id + extension)));
    }

    [Fact]
    public void PastMaxSizeNothingIsWrittenAndTheTotalIsUnchanged()
    {
        var store = NewStore(maxSize: 100);
        store.Add(Envelope("bob@example.net"), [], Body(new string('a', 60)), Now);

        Assert.Throws<QueueFullException>(() => store.Add(Envelope("bob@example.net"), [], Body(new string('b', 60)), Now));

        Assert.Equal(60, store.Bytes);
        Assert.Single(store.List());
        Assert.Equal(2, Directory.GetFiles(store.Folder).Length);
    }

    [Fact]
    public void RecoveryRemovesLeftoversAndMovesCorruptEntriesAside()
    {
        var store = NewStore();
        var good = store.Add(Envelope("bob@example.net"), [], Body("good\r\n"), Now);
        var truncated = store.Add(Envelope("bob@example.net"), [], Body("this message will lose its tail\r\n"), Now);
        var garbled = store.Add(Envelope("bob@example.net"), [], Body("garbled envelope\r\n"), Now);
        File.WriteAllText(Path.Combine(store.Folder, truncated.Id + QueueStore.MessageExtension), "this mess");
        File.WriteAllText(Path.Combine(store.Folder, garbled.Id + QueueStore.EntryExtension), "{\"id\": \"" + garbled.Id + "\", \"recip");
        File.WriteAllText(Path.Combine(store.Folder, "20261206050000000-abcdef" + QueueStore.MessageExtension), "orphan: its envelope never came");
        File.WriteAllText(Path.Combine(store.Folder, ".x.json.1234abcd.tmp"), "half written");

        var reports = new List<string>();
        var recovered = NewStore().Recover(reports.Add);

        Assert.Equal([good.Id], recovered.Select(e => e.Id));
        Assert.Equal(
            new[] { good.Id + ".eml", good.Id + ".json" },
            Directory.GetFiles(store.Folder).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(
            new[] { garbled.Id + ".eml", garbled.Id + ".json", truncated.Id + ".eml", truncated.Id + ".json" }.Order(StringComparer.Ordinal),
            Directory.GetFiles(store.CorruptFolder).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Contains(reports, r => r.Contains(truncated.Id, StringComparison.Ordinal) && r.Contains("corrupt", StringComparison.Ordinal));
        Assert.Contains(reports, r => r.Contains(garbled.Id, StringComparison.Ordinal) && r.Contains("corrupt", StringComparison.Ordinal));
        Assert.Contains(reports, r => r.Contains("20261206050000000-abcdef", StringComparison.Ordinal));
        Assert.Contains(reports, r => r.Contains(".x.json.1234abcd.tmp", StringComparison.Ordinal));
    }

    [Fact]
    public void AnEntryUnderDeliveryCannotBeHeldReleasedOrDeleted()
    {
        var store = NewStore();
        var added = store.Add(Envelope("bob@example.net"), [], Body("x\r\n"), Now);
        var cli = NewStore();   // as `portcullis queue` would open it

        using (var lease = store.TryLease(added.Id))
        {
            Assert.NotNull(lease);
            Assert.Null(store.TryLease(added.Id));
            Assert.Throws<QueueBusyException>(() => cli.Hold(added.Id));
            Assert.Throws<QueueBusyException>(() => cli.Release(added.Id));
            Assert.Throws<QueueBusyException>(() => cli.Delete(added.Id));
        }

        Assert.True(cli.Hold(added.Id).Held);
        Assert.True(store.Find(added.Id)!.Held);
        Assert.False(cli.Release(added.Id).Held);
        Assert.Equal(added.Id, cli.Delete(added.Id).Id);
        Assert.Null(store.Find(added.Id));
        Assert.Empty(Directory.GetFiles(store.Folder));
        Assert.Throws<QueueEntryNotFoundException>(() => cli.Delete(added.Id));
        Assert.Throws<QueueEntryNotFoundException>(() => cli.Hold("../../etc/passwd"));
    }

    [Fact]
    public void PerRecipientStateSurvivesAndCompleteRemovesTheEntry()
    {
        var store = NewStore();
        var added = store.Add(Envelope("bob@example.net", "carol@example.net"), [], Body("x\r\n"), Now);

        using (var lease = store.TryLease(added.Id)!)
        {
            var content = new byte[16];
            Assert.Equal(3, lease.Message.Read(0, content));
            lease.Save(lease.Entry with
            {
                Attempts = 1,
                Recipients = [lease.Entry.Recipients[0] with { State = RecipientState.Delivered, LastReply = "250 2.0.0 Ok" }, lease.Entry.Recipients[1]],
            });
        }
        var reread = NewStore().Find(added.Id)!;
        Assert.Equal(1, reread.Attempts);
        Assert.Equal(["carol@example.net"], reread.Pending.Select(r => r.Address));
        Assert.Equal("250 2.0.0 Ok", reread.Recipients[0].LastReply);

        using (var lease = store.TryLease(added.Id)!) lease.Complete();
        Assert.Empty(store.List());
        Assert.Equal(0, store.Bytes);
        Assert.Empty(Directory.GetFiles(store.Folder));
    }

    [Theory]
    [InlineData(1, 60)]
    [InlineData(2, 120)]
    [InlineData(3, 240)]
    [InlineData(6, 1920)]
    [InlineData(7, 3600)]
    [InlineData(40, 3600)]
    public void BackoffDoublesFromMinToMax(int attempts, int seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), QueueDelivery.Backoff(attempts, TimeSpan.FromMinutes(1), TimeSpan.FromHours(1)));

    [Theory]
    [InlineData("550 5.1.1 <x@example.net>: unknown user", "5.1.1")]
    [InlineData("552 message too large", "5.0.0")]
    [InlineData("delivery time expired (max_lifetime); last reply: unavailable: refused", "4.4.7")]
    public void DsnStatusComesFromTheReply(string reply, string status) => Assert.Equal(status, QueueDelivery.StatusOf(reply));
}
