using System.Buffers;
using FsCheck;
using FsCheck.Xunit;
using Portcullis.Appliance.Messages;
using Xunit;

namespace Portcullis.Appliance.Tests.Messages;

// MessageBuffer: what goes in comes out, in memory and spilled, and nothing is left in temp_folder.
public sealed class MessageBufferTests : IDisposable
{
    private readonly string _temp = Directory.CreateTempSubdirectory("portcullis-buffer-").FullName;

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    private static byte[] Pattern(int length, int seed = 1)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    // Writes data the way a parser does: ask for a span (sometimes with a hint), fill part of it.
    private static void WriteInChunks(MessageBuffer buffer, ReadOnlySpan<byte> data, IEnumerable<int> chunkSizes, bool useHints)
    {
        using var sizes = chunkSizes.GetEnumerator();
        while (!data.IsEmpty)
        {
            var want = sizes.MoveNext() ? Math.Max(1, sizes.Current) : data.Length;
            want = Math.Min(want, data.Length);
            var span = buffer.GetSpan(useHints ? want : 0);
            var n = Math.Min(want, span.Length);
            data[..n].CopyTo(span);
            buffer.Advance(n);
            data = data[n..];
        }
    }

    private static byte[] ReadAll(MessageBuffer buffer, int chunk)
    {
        var result = new byte[buffer.Length];
        long offset = 0;
        while (offset < buffer.Length)
        {
            var n = buffer.Read(offset, result.AsSpan((int)offset, (int)Math.Min(chunk, buffer.Length - offset)));
            Assert.True(n > 0);
            offset += n;
        }

        Assert.Equal(0, buffer.Read(buffer.Length, new byte[10]));
        return result;
    }

    [Property(MaxTest = 60)]
    public bool RandomWritesReadBackIdentical(PositiveInt[] chunkSizes, NonNegativeInt thresholdSeed, PositiveInt readChunk, bool useHints)
    {
        var sizes = chunkSizes.Select(c => c.Get % 150_000).ToArray();
        var total = sizes.Sum(s => Math.Max(1, s));
        var data = Pattern(total, total);
        var threshold = thresholdSeed.Get % (total + 10);

        using var buffer = new MessageBuffer(threshold, _temp);
        WriteInChunks(buffer, data, sizes, useHints);
        var expectSpill = total > threshold;
        return buffer.Length == total
            && buffer.IsSpilled == expectSpill
            && ReadAll(buffer, readChunk.Get % 100_000 + 1).AsSpan().SequenceEqual(data)
            && Directory.GetFileSystemEntries(_temp).Length == 0;
    }

    [Property(MaxTest = 40)]
    public bool ReadsAtArbitraryOffsetsMatch(PositiveInt size, NonNegativeInt[] offsets, bool spill)
    {
        var total = size.Get % 300_000 + 1;
        var data = Pattern(total, 7);
        using var buffer = new MessageBuffer(spill ? 1000 : long.MaxValue, _temp);
        WriteInChunks(buffer, data, [4093, 65536, 1, 70000], useHints: true);
        foreach (var raw in offsets)
        {
            var offset = raw.Get % (total + 5);
            var destination = new byte[(raw.Get * 31) % 90_000 + 1];
            var n = buffer.Read(offset, destination);
            var expected = Math.Max(0, Math.Min(destination.Length, total - offset));
            if (n != expected || !destination.AsSpan(0, n).SequenceEqual(data.AsSpan(Math.Min(offset, total), n)))
            {
                return false;
            }
        }

        return true;
    }

    [Fact]
    public void StaysInMemoryUpToTheThresholdAndSpillsPastIt()
    {
        var data = Pattern(100_000);
        using var buffer = new MessageBuffer(100_000, _temp);
        WriteInChunks(buffer, data.AsSpan(0, 99_999), [60_000, 39_999], useHints: false);
        Assert.False(buffer.IsSpilled);
        Assert.Null(buffer.SpillHandle);

        WriteInChunks(buffer, data.AsSpan(99_999), [1], useHints: false);
        Assert.False(buffer.IsSpilled);
        Assert.Equal(100_000, buffer.Length);

        var more = Pattern(5, 2);
        WriteInChunks(buffer, more, [5], useHints: false);
        Assert.True(buffer.IsSpilled);
        Assert.Equal(100_005, buffer.Length);
        Assert.Equal([.. data, .. more], ReadAll(buffer, 4096));
    }

    [Fact]
    public void ZeroThresholdSpillsTheFirstByte()
    {
        using var buffer = new MessageBuffer(0, _temp);
        Assert.False(buffer.IsSpilled);
        buffer.GetSpan(1)[0] = 42;
        buffer.Advance(1);
        Assert.True(buffer.IsSpilled);
        Assert.Equal([42], ReadAll(buffer, 1));
    }

    [Fact]
    public void SpillFileIsUnlinkedButHoldsTheWholeMessage()
    {
        var data = Pattern(300_000);
        using var buffer = new MessageBuffer(64 * 1024, _temp);
        WriteInChunks(buffer, data, [1000, 70_000, 3], useHints: true);
        Assert.True(buffer.IsSpilled);
        Assert.Empty(Directory.GetFileSystemEntries(_temp));

        var handle = buffer.SpillHandle;
        Assert.NotNull(handle);
        Assert.Equal(data.Length, RandomAccess.GetLength(handle));
        var fromFile = new byte[data.Length];
        Assert.Equal(data.Length, RandomAccess.Read(handle, fromFile, 0));
        Assert.Equal(data, fromFile);
    }

    [Fact]
    public void SpillFileIsPrivate()
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        using var buffer = new MessageBuffer(0, _temp);
        buffer.GetSpan(1);
        buffer.Advance(1);
        var mode = File.GetUnixFileMode(buffer.SpillHandle!);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, mode);
    }

    [Fact]
    public void DisposeIsIdempotentAndClosesTheFile()
    {
        var buffer = new MessageBuffer(10, _temp);
        WriteInChunks(buffer, Pattern(1000), [100], useHints: false);
        var handle = buffer.SpillHandle!;
        buffer.Dispose();
        buffer.Dispose();
        Assert.True(handle.IsClosed);
        Assert.Empty(Directory.GetFileSystemEntries(_temp));
        Assert.Throws<ObjectDisposedException>(() => buffer.Read(0, new byte[1]));
        Assert.Throws<ObjectDisposedException>(() => buffer.GetSpan());
    }

    [Fact]
    public async Task ReadFromAnotherThreadAfterWriting()
    {
        var data = Pattern(1_000_000);
        using var buffer = new MessageBuffer(200_000, _temp);
        WriteInChunks(buffer, data, Enumerable.Repeat(3000, 400), useHints: false);
        var results = Enumerable.Range(0, 4)
            .Select(i => Task.Run(() => ReadAll(buffer, 1000 + i * 7919)))
            .ToArray();
        foreach (var read in await Task.WhenAll(results))
        {
            Assert.Equal(data, read);
        }
    }

    [Fact]
    public void LargeSizeHintGetsALargeEnoughSpan()
    {
        using var buffer = new MessageBuffer(long.MaxValue, _temp);
        buffer.GetSpan(10)[0] = 1;
        buffer.Advance(1);
        var span = buffer.GetSpan(200_000);
        Assert.True(span.Length >= 200_000);
        span[..200_000].Fill(9);
        buffer.Advance(200_000);
        Assert.Equal(200_001, buffer.Length);
        var all = ReadAll(buffer, 65536);
        Assert.Equal(1, all[0]);
        Assert.All(all.Skip(1), b => Assert.Equal(9, b));
    }

    [Fact]
    public void AdvancePastTheSpanIsRefused()
    {
        using var buffer = new MessageBuffer(1000, _temp);
        var length = buffer.GetSpan().Length;
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.Advance(length + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.Advance(-1));
    }

    [Fact]
    public void WorksAsAnIBufferWriter()
    {
        using var buffer = new MessageBuffer(16, _temp);
        IBufferWriter<byte> writer = buffer;
        writer.Write("Subject: hi\r\n\r\nbody\r\n"u8);
        Assert.Equal("Subject: hi\r\n\r\nbody\r\n"u8.ToArray(), ReadAll(buffer, 3));
    }

    [Fact]
    public void SpillIntoAMissingFolderFailsAndLatches()
    {
        var missing = Path.Combine(_temp, "no-such-folder");
        using var buffer = new MessageBuffer(10, missing);
        var data = Pattern(20);
        var error = Assert.Throws<IOException>(() => WriteInChunks(buffer, data, [20], useHints: false));
        Assert.Contains(missing, error.Message, StringComparison.Ordinal);
        var again = Assert.Throws<IOException>(() => buffer.GetSpan());
        Assert.Equal(error.Message, again.Message);
    }

    [Fact]
    public void EmptyBufferReadsNothing()
    {
        using var buffer = new MessageBuffer(100, _temp);
        Assert.Equal(0, buffer.Length);
        Assert.Equal(0, buffer.Read(0, new byte[5]));
        Assert.False(buffer.IsSpilled);
    }
}
