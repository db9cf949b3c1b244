// The mail queue on disk: `<queue_folder>/queue/<id>.eml` (the message as it will be sent, trace
// headers included) and `<id>.json` (the envelope and delivery state, QueueEntry). Both are
// written through DurableFile (temporary name, fsync, rename, folder fsync), .eml first: an
// entry exists once its .json does, so a crash between the two leaves an orphan .eml that
// recovery removes (the client never got its 250). 0600 files in a 0700 folder.
//
// Whoever works on an entry (a delivery attempt, hold, release, delete) holds flock(LOCK_EX) on
// its .eml, which is never rewritten; the lock is advisory and shared with `portcullis queue` in
// another process. An entry under someone else's lock is busy: the CLI's operations fail with
// QueueBusyException instead of waiting, delivery skips it until later.
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Storage;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Queue;

public sealed partial class QueueStore
{
    public const string MessageExtension = ".eml";
    public const string EntryExtension = ".json";
    public const string CorruptFolderName = "corrupt";

    // Room left on the file system beyond the message itself: the log, the outbox, a quarantine copy.
    public const long DiskReserve = 64L << 20;

    private static long s_sequence;
    private long _bytes;
    private int _count;

    // folder: the queue's own folder (FolderFor); maxSize: [queue] max_size.
    public QueueStore(string folder, long maxSize)
    {
        Folder = folder;
        MaxSize = maxSize;
    }

    public static string FolderFor(string queueFolder) => Path.Combine(queueFolder, "queue");

    public string Folder { get; }
    public string CorruptFolder => Path.Combine(Folder, CorruptFolderName);
    public long MaxSize { get; }

    // What this process knows is queued (Recount reads it from the folder).
    public long Bytes => Interlocked.Read(ref _bytes);
    public int Count => Volatile.Read(ref _count);

    // yyyyMMddHHmmssfff-xxxxxx: sorts by arrival, safe as a file name.
    public static bool IsValidId(string id) =>
        id.Length == 24 && id[17] == '-' && id.AsSpan(0, 17).IndexOfAnyExceptInRange('0', '9') < 0
        && id.AsSpan(18).IndexOfAnyExcept("0123456789abcdef") < 0;

    public void EnsureFolder() => DurableFile.EnsureFolder(Folder);

    // At daemon start-up: temporary files of interrupted writes and orphan messages are removed,
    // unreadable entries moved to corrupt/; every problem is reported through `report`.
    // Returns the entries that are queued.
    public IReadOnlyList<QueueEntry> Recover(Action<string> report)
    {
        EnsureFolder();
        foreach (var path in Directory.EnumerateFiles(Folder))
        {
            var name = Path.GetFileName(path);
            if (name.StartsWith('.') && name.EndsWith(DurableFile.TempSuffix, StringComparison.Ordinal))
            {
                DurableFile.TryDelete(path);
                report($"queue: removed {name}, left by an interrupted write");
            }
        }

        var entries = new List<QueueEntry>();
        foreach (var path in Directory.EnumerateFiles(Folder, "*" + EntryExtension).Order(StringComparer.Ordinal))
        {
            var id = Path.GetFileNameWithoutExtension(path);
            if (!IsValidId(id)) continue;
            if (ReadEntry(id, out var problem) is { } entry) entries.Add(entry);
            else MoveAside(id, problem, report);
        }

        foreach (var path in Directory.EnumerateFiles(Folder, "*" + MessageExtension))
        {
            var id = Path.GetFileNameWithoutExtension(path);
            if (IsValidId(id) && !File.Exists(EntryPath(id)))
            {
                DurableFile.TryDelete(path);
                report($"queue: removed {id}{MessageExtension}: its envelope was never written (the client was not answered)");
            }
        }

        DurableFile.SyncFolder(Folder);
        Recount(entries);
        return entries;
    }

    // Every readable entry in arrival order; unreadable ones are reported and skipped.
    public IReadOnlyList<QueueEntry> List(Action<string>? report = null)
    {
        if (!Directory.Exists(Folder)) return [];
        var entries = new List<QueueEntry>();
        foreach (var path in Directory.EnumerateFiles(Folder, "*" + EntryExtension).Order(StringComparer.Ordinal))
        {
            var id = Path.GetFileNameWithoutExtension(path);
            if (!IsValidId(id)) continue;
            if (ReadEntry(id, out var problem) is { } entry) entries.Add(entry);
            else if (problem.Length > 0) report?.Invoke($"queue entry {id}: {problem}");
        }
        return entries;
    }

    // The entry, or null when there is none with that id (or it cannot be read).
    public QueueEntry? Find(string id) => IsValidId(id) ? ReadEntry(id, out _) : null;

    // The queued message as it will be sent. QueueEntryNotFoundException, QueueBusyException.
    public FileStream OpenMessage(string id)
    {
        RequireValid(id);
        try
        {
            return new FileStream(MessagePath(id), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (FileNotFoundException)
        {
            throw new QueueEntryNotFoundException(id);
        }
        catch (IOException e) when (File.Exists(MessagePath(id)))
        {
            throw new QueueBusyException(id, e.Message);
        }
    }

    // Writes a clean, scanned message to the queue: `headers` (the trace fields) in front of
    // `content`. Returns the entry once both files are on disk. QueueFullException past max_size
    // or when the disk is short; IOException when writing fails (nothing is left behind).
    public QueueEntry Add(QueueEntry envelope, ReadOnlySpan<byte> headers, IMessageContent content, DateTimeOffset now)
    {
        long size = headers.Length + content.Length;
        if (Interlocked.Add(ref _bytes, size) > MaxSize)
        {
            Interlocked.Add(ref _bytes, -size);
            throw new QueueFullException($"the queue holds {Bytes} bytes and max_size is {MaxSize}");
        }
        try
        {
            EnsureFolder();
            long free = new DriveInfo(Folder).AvailableFreeSpace;
            if (free < size + DiskReserve)
                throw new QueueFullException($"only {free} bytes free in {Folder}");

            var id = NewId(now);
            var prefix = headers.ToArray();
            DurableFile.Write(Folder, id + MessageExtension, file =>
            {
                file.Write(prefix);
                ContentStream.CopyWhole(content, file);
            });
            var entry = envelope with { Id = id, Size = size, Arrival = now, NextAttempt = now };
            try
            {
                Save(entry);
            }
            catch (IOException)
            {
                DurableFile.TryDelete(MessagePath(id));
                throw;
            }
            Interlocked.Increment(ref _count);
            return entry;
        }
        catch
        {
            Interlocked.Add(ref _bytes, -size);
            throw;
        }
    }

    // Locks the entry for a delivery attempt: null when it is gone, held by another worker or
    // the CLI, or unreadable. Dispose the lease to unlock.
    public QueueLease? TryLease(string id)
    {
        var message = TryLock(id, out _);
        if (message is null) return null;
        if (ReadEntry(id, out _) is not { } entry)
        {
            message.Dispose();
            return null;
        }
        return new QueueLease(this, entry, message);
    }

    // Held entries are not delivered until released. QueueEntryNotFoundException, QueueBusyException.
    public QueueEntry Hold(string id) => Update(id, e => e with { Held = true });

    // Releases a held entry and makes it due now.
    public QueueEntry Release(string id) => Update(id, e => e with { Held = false, NextAttempt = DateTimeOffset.UtcNow });

    // Removes the entry without delivering it. QueueEntryNotFoundException, QueueBusyException.
    public QueueEntry Delete(string id)
    {
        using var message = LockOrThrow(id);
        var entry = ReadEntry(id, out _) ?? throw new QueueEntryNotFoundException(id);
        Remove(entry, durable: true);
        return entry;
    }

    // Re-reads the folder's totals (another process may have deleted entries).
    public IReadOnlyList<QueueEntry> Recount(IReadOnlyList<QueueEntry>? entries = null)
    {
        entries ??= List();
        Interlocked.Exchange(ref _bytes, entries.Sum(e => e.Size));
        Volatile.Write(ref _count, entries.Count);
        return entries;
    }

    internal void Save(QueueEntry entry) =>
        DurableFile.Write(Folder, entry.Id + EntryExtension, file => JsonSerializer.Serialize(file, entry, QueueJson.Default.QueueEntry));

    // The envelope goes first: from then on the entry does not exist, whatever happens to the message file.
    // durable: the folder is synced. After a delivery it is not: an entry that comes back after a
    // power loss is delivered once more, which SMTP allows (RFC 5321 §6.1), and the drain is faster.
    internal void Remove(QueueEntry entry, bool durable)
    {
        File.Delete(EntryPath(entry.Id));
        DurableFile.TryDelete(MessagePath(entry.Id));
        if (durable) DurableFile.SyncFolder(Folder);
        Interlocked.Add(ref _bytes, -entry.Size);
        Interlocked.Decrement(ref _count);
    }

    private QueueEntry Update(string id, Func<QueueEntry, QueueEntry> change)
    {
        using var message = LockOrThrow(id);
        var entry = ReadEntry(id, out _) ?? throw new QueueEntryNotFoundException(id);
        var changed = change(entry);
        Save(changed);
        return changed;
    }

    private FileStream LockOrThrow(string id)
    {
        RequireValid(id);
        return TryLock(id, out var busy) ?? throw (busy is null ? new QueueEntryNotFoundException(id) : new QueueBusyException(id, busy));
    }

    // The entry's message file, opened and locked; null with busy = why when another has it,
    // null with busy = null when there is no such entry.
    private FileStream? TryLock(string id, out string? busy)
    {
        busy = null;
        FileStream message;
        try
        {
            message = new FileStream(MessagePath(id), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        catch (IOException e)
        {
            // .NET itself takes a shared flock on open: an exclusive one elsewhere refuses it.
            if (File.Exists(MessagePath(id))) busy = e.Message;
            return null;
        }
        if (flock(message.SafeFileHandle, LOCK_EX | LOCK_NB) != 0)
        {
            busy = "it is being delivered or changed by another process";
            message.Dispose();
            return null;
        }
        if (!File.Exists(EntryPath(id)))
        {
            message.Dispose();   // deleted while we opened it
            return null;
        }
        return message;
    }

    private QueueEntry? ReadEntry(string id, out string problem)
    {
        problem = "";
        try
        {
            using var file = File.OpenRead(EntryPath(id));
            var entry = JsonSerializer.Deserialize(file, QueueJson.Default.QueueEntry);
            if (entry is null || entry.Id != id || entry.Recipients.Count == 0)
            {
                problem = "the envelope is incomplete";
                return null;
            }
            var message = new FileInfo(MessagePath(id));
            if (!message.Exists)
            {
                problem = "the message file is missing";
                return null;
            }
            if (message.Length != entry.Size)
            {
                problem = $"the message file has {message.Length} bytes, the envelope says {entry.Size}";
                return null;
            }
            return entry;
        }
        catch (FileNotFoundException)
        {
            return null;   // removed meanwhile
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            problem = "the envelope cannot be read: " + e.Message;
            return null;
        }
    }

    private void MoveAside(string id, string problem, Action<string> report)
    {
        try
        {
            DurableFile.EnsureFolder(CorruptFolder);
            foreach (var path in new[] { MessagePath(id), EntryPath(id) })
                if (File.Exists(path)) File.Move(path, Path.Combine(CorruptFolder, Path.GetFileName(path)), overwrite: true);
            DurableFile.SyncFolder(CorruptFolder);
            report($"queue: entry {id} is corrupt ({problem}); moved aside to {CorruptFolder}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            report($"queue: entry {id} is corrupt ({problem}) and cannot be moved aside: {e.Message}");
        }
    }

    private static string NewId(DateTimeOffset now)
    {
        // The sequence keeps ids of one millisecond apart; the random part keeps processes apart.
        var sequence = (uint)Interlocked.Increment(ref s_sequence);
        Span<byte> random = stackalloc byte[3];
        RandomNumberGenerator.Fill(random);
        random[2] = (byte)(random[2] ^ sequence);
        random[1] = (byte)(random[1] ^ (sequence >> 8));
        return now.UtcDateTime.ToString("yyyyMMddHHmmssfff", CultureInfo.InvariantCulture) + "-" + Convert.ToHexStringLower(random);
    }

    private static void RequireValid(string id)
    {
        if (!IsValidId(id)) throw new QueueEntryNotFoundException(id);
    }

    internal string MessagePath(string id) => Path.Combine(Folder, id + MessageExtension);
    private string EntryPath(string id) => Path.Combine(Folder, id + EntryExtension);

    private const int LOCK_EX = 2;
    private const int LOCK_NB = 4;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int flock(SafeFileHandle fd, int operation);
}

// One delivery attempt's hold on an entry: its message (locked) and envelope. Save keeps the
// new state, Complete removes the entry; Dispose unlocks.
public sealed class QueueLease : IDisposable
{
    private readonly QueueStore _store;
    private readonly FileStream _message;

    internal QueueLease(QueueStore store, QueueEntry entry, FileStream message)
    {
        _store = store;
        Entry = entry;
        _message = message;
    }

    public QueueEntry Entry { get; private set; }

    // The message file's content, read with pread so the lock stays with this lease.
    public IMessageContent Message => field ??= new FileContent(_message.SafeFileHandle, _message.Length);

    public void Save(QueueEntry entry)
    {
        _store.Save(entry);
        Entry = entry;
    }

    public void Complete() => _store.Remove(Entry, durable: false);

    public void Dispose() => _message.Dispose();

    private sealed class FileContent(SafeFileHandle file, long length) : IMessageContent
    {
        public long Length => length;

        public int Read(long offset, Span<byte> destination) =>
            offset >= length ? 0 : RandomAccess.Read(file, destination[..(int)Math.Min(destination.Length, length - offset)], offset);
    }
}

public sealed class QueueEntryNotFoundException(string id) : Exception($"no queue entry {id}")
{
    public string Id { get; } = id;
}

public sealed class QueueBusyException(string id, string why) : Exception($"queue entry {id} is busy: {why}; try again in a moment")
{
    public string Id { get; } = id;
}

// The queue cannot take the message now: the client gets 452 4.3.1 and tries again later.
public sealed class QueueFullException(string why) : Exception(why);
