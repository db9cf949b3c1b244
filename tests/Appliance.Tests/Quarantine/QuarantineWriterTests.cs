using Portcullis.Appliance.Quarantine;
using Portcullis.SmtpCore;
using Xunit;

namespace Portcullis.Appliance.Tests.Quarantine;

// The quarantine writer: copies are written on its own thread (never a thread-pool thread), and
// the session's task completes only once both files are on disk.
public sealed class QuarantineWriterTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("portcullis-qwriter-").FullName;
    private readonly QuarantineWriter _writer = new();

    public void Dispose()
    {
        _writer.Dispose();
        Directory.Delete(_folder, recursive: true);
    }

    [Fact]
    public async Task The_answer_comes_only_after_the_entry_is_on_disk_and_off_the_thread_pool()
    {
        var store = new QuarantineStore(Path.Combine(_folder, "q"));
        var message = new GatedContent("From: a@example.org\r\n\r\nbody\r\n"u8.ToArray());
        var entry = new QuarantineEntry { Id = QuarantineStore.NewId(DateTimeOffset.UnixEpoch), Time = DateTimeOffset.UnixEpoch, Virus = "Test.Virus" };

        var written = _writer.AddAsync(store, entry, message);
        await message.Reading.WaitAsync(TimeSpan.FromSeconds(30));

        // The writer is inside the copy: the session's task cannot have completed, no metadata yet.
        Assert.False(written.IsCompleted);
        Assert.False(File.Exists(Path.Combine(store.Folder, entry.Id + QuarantineStore.MetadataExtension)));

        message.Release();
        var kept = await written.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(File.Exists(Path.Combine(store.Folder, kept.Id + QuarantineStore.MessageExtension)));
        Assert.True(File.Exists(Path.Combine(store.Folder, kept.Id + QuarantineStore.MetadataExtension)));
        Assert.Equal("Test.Virus", store.Get(kept.Id).Virus);
        Assert.False(message.ReadOnThreadPool);
        Assert.Equal("quarantine-writer", message.ReaderThreadName);
    }

    [Fact]
    public async Task A_write_that_fails_faults_with_an_IOException()
    {
        var notAFolder = Path.Combine(_folder, "file");
        await File.WriteAllTextAsync(notAFolder, "x");
        var store = new QuarantineStore(notAFolder);
        var message = new GatedContent("x\r\n"u8.ToArray());
        message.Release();

        await Assert.ThrowsAnyAsync<IOException>(() => _writer.AddAsync(store, new QuarantineEntry { Time = DateTimeOffset.UnixEpoch }, message));
        // The writer thread survives a failure.
        var good = new QuarantineStore(Path.Combine(_folder, "q2"));
        var kept = await _writer.AddAsync(good, new QuarantineEntry { Time = DateTimeOffset.UnixEpoch }, message).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(File.Exists(Path.Combine(good.Folder, kept.Id + QuarantineStore.MetadataExtension)));
    }

    private sealed class GatedContent(byte[] bytes) : IMessageContent
    {
        private readonly ManualResetEventSlim _gate = new();
        private readonly TaskCompletionSource _reading = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Reading => _reading.Task;
        public bool ReadOnThreadPool { get; private set; }
        public string? ReaderThreadName { get; private set; }

        public long Length => bytes.Length;

        public void Release() => _gate.Set();

        public int Read(long offset, Span<byte> destination)
        {
            ReadOnThreadPool |= Thread.CurrentThread.IsThreadPoolThread;
            ReaderThreadName = Thread.CurrentThread.Name;
            _reading.TrySetResult();
            _gate.Wait();
            if (offset >= bytes.Length) return 0;
            var n = Math.Min(destination.Length, bytes.Length - (int)offset);
            bytes.AsSpan((int)offset, n).CopyTo(destination);
            return n;
        }
    }
}
