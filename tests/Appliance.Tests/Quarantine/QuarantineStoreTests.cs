using System.Text;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Quarantine;
using Xunit;

namespace Portcullis.Appliance.Tests.Quarantine;

public sealed class QuarantineStoreTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "portcullis-q-" + Guid.NewGuid().ToString("N"));
    private readonly QuarantineStore _store;

    public QuarantineStoreTests() => _store = new QuarantineStore(Path.Combine(_root, "quarantine"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private static readonly byte[] Message = Encoding.ASCII.GetBytes("Subject: x\r\n\r\nbody\r\n");

    private QuarantineEntry Add(DateTimeOffset time, string virus = "Eicar") =>
        _store.Add(new QuarantineEntry { Time = time, Virus = virus, Sender = "a@b.test", Recipients = ["c@d.test"], Subject = "x" }, new BytesContent(Message));

    [Fact]
    public void AddWritesMessageAndMetadataPrivatelyWithNoTemporaryFilesLeft()
    {
        var entry = Add(DateTimeOffset.UtcNow);

        Assert.True(QuarantineStore.IsValidId(entry.Id));
        Assert.Equal(Message.Length, entry.Size);
        Assert.Equal(Message, File.ReadAllBytes(Path.Combine(_store.Folder, entry.Id + ".eml")));
        Assert.Equal(entry, _store.Get(entry.Id) with { Recipients = entry.Recipients });
        Assert.Equal(["c@d.test"], _store.Get(entry.Id).Recipients);
        var files = Directory.GetFiles(_store.Folder).Select(f => Path.GetFileName(f)!).Order().ToArray();
        Assert.Equal([entry.Id + ".eml", entry.Id + ".json"], files);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_store.Folder, entry.Id + ".json")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_store.Folder, entry.Id + ".eml")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(_store.Folder));
        Assert.Contains("\"message_id\"", File.ReadAllText(Path.Combine(_store.Folder, entry.Id + ".json")));
    }

    // The id is the UTC time to the second and 8 random hex digits.
    [Fact]
    public void NewIdIsTheUtcSecondAndEightHexDigits()
    {
        var time = new DateTimeOffset(2026, 12, 6, 21, 4, 5, 678, TimeSpan.FromHours(2));

        var id = QuarantineStore.NewId(time);

        Assert.True(QuarantineStore.IsValidId(id));
        Assert.StartsWith("20261206-190405-", id);
        Assert.NotEqual(id, QuarantineStore.NewId(time));
    }

    [Fact]
    public void FailedWriteLeavesNothingUnderTheFinalNames()
    {
        var failing = new FailingContent();
        Assert.ThrowsAny<IOException>(() => _store.Add(new QuarantineEntry { Time = DateTimeOffset.UtcNow }, failing));
        Assert.Empty(Directory.GetFiles(_store.Folder));
    }

    [Fact]
    public void BrokenEntriesAreListedWithAClearProblem()
    {
        var good = Add(DateTimeOffset.UtcNow);
        var corrupt = Add(DateTimeOffset.UtcNow);
        File.WriteAllText(Path.Combine(_store.Folder, corrupt.Id + ".json"), "{ not json");
        var orphan = Add(DateTimeOffset.UtcNow);
        File.Delete(Path.Combine(_store.Folder, orphan.Id + ".json"));
        File.WriteAllText(Path.Combine(_store.Folder, "unrelated.txt"), "");

        var listings = _store.List().ToDictionary(l => l.Id);

        Assert.Equal(3, listings.Count);
        Assert.NotNull(listings[good.Id].Entry);
        Assert.Contains("is corrupt", listings[corrupt.Id].Problem);
        Assert.Contains("incomplete", listings[orphan.Id].Problem);
        Assert.Contains("is corrupt", Assert.Throws<QuarantineException>(() => _store.Get(corrupt.Id)).Message);
    }

    [Theory]
    [InlineData("20240101-120000-1a2b3c4d")]
    [InlineData("../../etc/passwd")]
    [InlineData("")]
    public void MissingOrInvalidIdsGiveClearErrors(string id)
    {
        var error = Assert.Throws<QuarantineException>(() => _store.Get(id));
        Assert.True(error.Message.Contains("no quarantine entry") || error.Message.Contains("is not a quarantine id"), error.Message);
    }

    [Fact]
    public void DeleteAndPurge()
    {
        var old = Add(DateTimeOffset.UtcNow.AddDays(-40));
        var fresh = Add(DateTimeOffset.UtcNow);
        var brokenOld = Add(DateTimeOffset.UtcNow.AddDays(-40));
        File.WriteAllText(Path.Combine(_store.Folder, brokenOld.Id + ".json"), "garbage");
        foreach (var file in Directory.GetFiles(_store.Folder, brokenOld.Id + ".*"))
            File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddDays(-40));

        Assert.Equal(2, _store.Purge(DateTimeOffset.UtcNow.AddDays(-30)));
        Assert.Equal([fresh.Id], _store.List().Select(l => l.Id));
        Assert.True(_store.Delete(fresh.Id));
        Assert.False(_store.Delete(fresh.Id));
        Assert.Empty(_store.List());
        Assert.False(File.Exists(Path.Combine(_store.Folder, old.Id + ".eml")));
    }

    private sealed class FailingContent : Portcullis.SmtpCore.IMessageContent
    {
        public long Length => 100;

        public int Read(long offset, Span<byte> destination) => throw new IOException("disk on fire");
    }
}
