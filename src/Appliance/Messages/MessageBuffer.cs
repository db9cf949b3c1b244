using System.Buffers;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Messages;

// One message body, written once (IBufferWriter) and then read at random offsets by the scanner
// and the downstream client. Small messages live in 64 KiB segments rented from ArrayPool; once
// the length passes memoryThreshold everything moves to a spill file in tempFolder. The spill
// file is made with O_TMPFILE, so it never has a name and nothing is left behind even after
// kill -9; where the file system cannot do that it is created and unlinked at once, and a name
// left by a kill in between is removed at the next start (RemoveStaleSpillFiles). Writes to the file go through a 64 KiB staging segment, flushed when
// full and before the first Read or SpillHandle access. Every in-memory segment is reserved from a
// process-wide MessageMemoryBudget first; when the budget has no room the message spills at once,
// whatever its length, and the reservation goes back when it spills or is disposed.
//
// Threading: one writer; Read may be called from other threads once writing has finished (the
// hand-off between threads supplies the memory barrier). After an I/O failure every further
// write throws IOException so the session can answer 452/451.
public sealed class MessageBuffer : IBufferWriter<byte>, IScanSource, IMessageContent, IDisposable
{
    public const int SegmentSize = 64 * 1024;

    private readonly long _memoryThreshold;
    private readonly string _tempFolder;
    private readonly MessageMemoryBudget _budget;
    private long _reserved;
    private readonly List<byte[]> _segments = [];
    private readonly Lock _flushLock = new();

    private long _length;

    // Past 1 MiB in memory or past memory_threshold: its memory is given back when it is gone.
    private bool _large;

    // Spilled state: the file holds [0, _flushed); _staging[0.._staged] follows it.
    private FileStream? _spill;
    private byte[]? _staging;
    private int _staged;
    private long _flushed;

    // A span larger than the free room of the current segment or staging area is handed out here.
    private byte[]? _scratch;
    private bool _spanIsScratch;
    private int _spanLength;

    private string? _failure;
    private bool _disposed;

    public MessageBuffer(long memoryThreshold, string tempFolder)
        : this(memoryThreshold, tempFolder, MessageMemoryBudget.Shared)
    {
    }

    public MessageBuffer(long memoryThreshold, string tempFolder, MessageMemoryBudget budget)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(memoryThreshold);
        ArgumentException.ThrowIfNullOrEmpty(tempFolder);
        ArgumentNullException.ThrowIfNull(budget);
        _memoryThreshold = memoryThreshold;
        _tempFolder = tempFolder;
        _budget = budget;
    }

    public long Length => _length;

    public bool IsSpilled => _spill is not null;

    // The (already unlinked) spill file with the whole message so far, or null while in memory.
    public SafeFileHandle? SpillHandle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_spill is null)
            {
                return null;
            }

            FlushStaging();
            return _spill.SafeFileHandle;
        }
    }

    public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        ThrowIfUnwritable();
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        var wanted = Math.Max(sizeHint, 1);
        _spanIsScratch = false;

        Memory<byte> memory;
        if (_spill is null)
        {
            var used = (int)(_length % SegmentSize);
            if (used == 0 && _segments.Count * (long)SegmentSize == _length)
            {
                // Rent lazily: the previous segment is exactly full (or there is none yet).
                if (wanted > SegmentSize)
                {
                    memory = Scratch(wanted);
                }
                else if (TryRentSegment() is { } segment)
                {
                    memory = segment.AsMemory(0, SegmentSize);
                }
                else
                {
                    SpillPastBudget();
                    memory = StagingMemory(wanted);
                }
            }
            else
            {
                memory = SegmentSize - used >= wanted ? _segments[^1].AsMemory(used, SegmentSize - used) : Scratch(wanted);
            }
        }
        else
        {
            memory = StagingMemory(wanted);
        }

        _spanLength = memory.Length;
        return memory;
    }

    public void Advance(int count)
    {
        ThrowIfUnwritable();
        if (count < 0 || count > _spanLength)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, $"Advance({count}) after a span of {_spanLength} bytes");
        }

        _spanLength = 0;
        if (count == 0)
        {
            return;
        }

        if (_spanIsScratch)
        {
            _spanIsScratch = false;
            AppendCopy(_scratch.AsSpan(0, count));
        }
        else if (_spill is null)
        {
            _length += count;
        }
        else
        {
            _staged += count;
            _length += count;
        }

        if (_spill is null && _length > _memoryThreshold)
        {
            Spill();
        }
    }

    public int Read(long offset, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset >= _length || destination.IsEmpty)
        {
            return 0;
        }

        var count = (int)Math.Min(destination.Length, _length - offset);
        destination = destination[..count];
        if (_spill is null)
        {
            CopyFromSegments(offset, destination);
            return count;
        }

        FlushStaging();
        var done = 0;
        while (done < count)
        {
            var n = RandomAccess.Read(_spill.SafeFileHandle, destination[done..], offset + done);
            if (n <= 0)
            {
                throw new IOException($"the spill file in {_tempFolder} ended at {offset + done} bytes, expected {_length}");
            }

            done += n;
        }

        return count;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        ReturnSegments();
        if (_staging is not null)
        {
            ArrayPool<byte>.Shared.Return(_staging);
            _staging = null;
        }

        if (_scratch is not null)
        {
            ArrayPool<byte>.Shared.Return(_scratch);
            _scratch = null;
        }

        _spill?.Dispose();
        _spill = null;
        if (_large)
        {
            LargeMessageMemory.End();
        }
    }

    private void ThrowIfUnwritable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_failure is not null)
        {
            throw new IOException(_failure);
        }
    }

    // A new in-memory segment, or null when the memory budget has no room for it.
    private byte[]? TryRentSegment()
    {
        if (!_budget.TryReserve(SegmentSize))
        {
            return null;
        }

        _reserved += SegmentSize;
        var segment = ArrayPool<byte>.Shared.Rent(SegmentSize);
        _segments.Add(segment);
        if (_segments.Count == LargeMessageMemory.Segments)
        {
            MarkLarge();
        }

        return segment;
    }

    private void MarkLarge()
    {
        if (!_large)
        {
            _large = true;
            LargeMessageMemory.Begin();
        }
    }

    private void ReturnSegments()
    {
        foreach (var segment in _segments)
        {
            ArrayPool<byte>.Shared.Return(segment);
        }

        _segments.Clear();
        _budget.Release(_reserved);
        _reserved = 0;
    }

    // The memory budget is used up: the message goes to temp_folder now, if that has room for it
    // to start there. If not, the write fails while DATA is still arriving, so the client hears
    // 452 4.3.1 then rather than a failed flush after the end of data.
    private void SpillPastBudget()
    {
        long free;
        try
        {
            free = new DriveInfo(_tempFolder).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            free = 0; // unknown counts as full
        }

        if (free < SegmentSize)
        {
            throw Fail($"the memory budget for messages is used up and {_tempFolder} has no room to spill to",
                new IOException($"{free} bytes free in {_tempFolder}"));
        }

        Spill();
    }

    private Memory<byte> StagingMemory(int wanted)
    {
        if (_staging!.Length - _staged < wanted)
        {
            FlushStaging();
        }

        return _staging.Length - _staged >= wanted ? _staging.AsMemory(_staged) : Scratch(wanted);
    }

    private Memory<byte> Scratch(int size)
    {
        if (_scratch is null || _scratch.Length < size)
        {
            if (_scratch is not null)
            {
                ArrayPool<byte>.Shared.Return(_scratch);
            }

            _scratch = ArrayPool<byte>.Shared.Rent(size);
        }

        _spanIsScratch = true;
        return _scratch.AsMemory(0, size);
    }

    // Copies bytes handed out in the scratch span to where they belong.
    private void AppendCopy(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            if (_spill is null)
            {
                var used = (int)(_length % SegmentSize);
                var segment = used == 0 && _segments.Count * (long)SegmentSize == _length ? TryRentSegment() : _segments[^1];
                if (segment is null)
                {
                    SpillPastBudget();
                    continue;
                }

                var n = Math.Min(SegmentSize - used, data.Length);
                data[..n].CopyTo(segment.AsSpan(used));
                _length += n;
                data = data[n..];
                if (_length > _memoryThreshold)
                {
                    Spill();
                }
            }
            else
            {
                if (_staged == _staging!.Length)
                {
                    FlushStaging();
                }

                var n = Math.Min(_staging.Length - _staged, data.Length);
                data[..n].CopyTo(_staging.AsSpan(_staged));
                _staged += n;
                _length += n;
                data = data[n..];
            }
        }
    }

    private void CopyFromSegments(long offset, Span<byte> destination)
    {
        var index = (int)(offset / SegmentSize);
        var within = (int)(offset % SegmentSize);
        while (!destination.IsEmpty)
        {
            var n = Math.Min(SegmentSize - within, destination.Length);
            _segments[index].AsSpan(within, n).CopyTo(destination);
            destination = destination[n..];
            index++;
            within = 0;
        }
    }

    public const string SpillPrefix = "portcullis-", SpillSuffix = ".spill";

    // At start-up: spill files a kill left named in tempFolder (fallback path only). Returns how many.
    public static int RemoveStaleSpillFiles(string tempFolder)
    {
        var removed = 0;
        foreach (var path in Directory.EnumerateFiles(tempFolder, SpillPrefix + "*" + SpillSuffix))
        {
            TryDelete(path);
            if (!File.Exists(path)) removed++;
        }

        return removed;
    }

    // Moves everything written so far into a fresh file that has no name; later writes go there too.
    private void Spill()
    {
        if (_length > _memoryThreshold)
        {
            MarkLarge();
        }

        var path = "";
        try
        {
            if (!OperatingSystem.IsWindows() && Storage.UnixFile.TryCreateUnnamed(_tempFolder) is { } unnamed)
            {
                _spill = new FileStream(unnamed, FileAccess.ReadWrite, bufferSize: 0);
            }
            else
            {
                path = Path.Combine(_tempFolder, SpillPrefix + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12)) + SpillSuffix);
                _spill = CreateAndUnlink(path);
            }

            long position = 0;
            foreach (var segment in _segments)
            {
                var n = (int)Math.Min(SegmentSize, _length - position);
                RandomAccess.Write(_spill.SafeFileHandle, segment.AsSpan(0, n), position);
                position += n;
            }

            _flushed = position;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            if (_spill is not null)
            {
                _spill.Dispose();
                _spill = null;
            }

            if (path.Length > 0)
            {
                TryDelete(path);
            }

            throw Fail($"cannot spill the message to {_tempFolder}: {e.Message}", e);
        }

        ReturnSegments();
        _staging = ArrayPool<byte>.Shared.Rent(SegmentSize);
        _staged = 0;
    }

    // The fallback where O_TMPFILE is not supported: named for a moment, then only the handle.
    private static FileStream CreateAndUnlink(string path)
    {
        // CreateNew (O_EXCL) never follows a planted symlink; 0600 keeps mail private.
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Share = FileShare.None,
            BufferSize = 0,
        };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        var file = new FileStream(path, options);
        File.Delete(path);
        return file;
    }

    private void FlushStaging()
    {
        lock (_flushLock)
        {
            if (_staged == 0 || _spill is null)
            {
                return;
            }

            try
            {
                RandomAccess.Write(_spill.SafeFileHandle, _staging.AsSpan(0, _staged), _flushed);
            }
            catch (IOException e)
            {
                throw Fail($"cannot write the message to {_tempFolder}: {e.Message}", e);
            }

            _flushed += _staged;
            _staged = 0;
        }
    }

    private IOException Fail(string message, Exception inner)
    {
        _failure = message;
        return new IOException(message, inner);
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort: the create or the first delete already failed.
        }
    }
}
