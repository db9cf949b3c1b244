using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Storage;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Quarantine;

// The quarantine folder: one entry per message, <id>.eml (the message as the client sent it) and
// <id>.json (QuarantineEntry). The .eml is written first and the .json last, each durably
// (DurableFile), so an entry is listed only once both are complete on disk; a crash in between
// leaves an .eml without metadata, which `list` reports and purge removes.
// Root runs the CLI over a folder the service account can write: entries are opened without
// following symlinks, and only regular files owned by root or the service user are read.
public sealed partial class QuarantineStore(string folder)
{
    public const string MessageExtension = ".eml";
    public const string MetadataExtension = ".json";
    public const string ServiceUser = "portcullis";   // rootfs/usr/lib/sysusers.d/portcullis.conf

    public string Folder { get; } = folder;

    public void EnsureFolder() => DurableFile.EnsureFolder(Folder);

    // At start: the folder exists and only its owner may enter it (0700), as README promises; an
    // existing folder with a laxer mode is tightened, or IOException says why it cannot be.
    public void PrepareFolder()
    {
        EnsureFolder();
        if (OperatingSystem.IsWindows()) return;
        const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        var mode = File.GetUnixFileMode(Folder);
        if ((mode & ~Private) == 0) return;
        try
        {
            File.SetUnixFileMode(Folder, mode & Private);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{Folder} has mode {ModeText(mode)} and cannot be made 0700 ({e.Message}); " +
                                  $"chown it to the {ServiceUser} user or chmod 700 it", e);
        }
    }

    // Ids sort by time: 20240101-120000-1a2b3c4d (UTC).
    // yyyyMMdd-HHmmss-xxxxxxxx, made as one string: the gateway makes one for every message it scans.
    public static string NewId(DateTimeOffset time)
    {
        Span<byte> random = stackalloc byte[4];
        RandomNumberGenerator.Fill(random);
        Span<char> id = stackalloc char[24];
        time.UtcDateTime.TryFormat(id, out int length, "yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        id[length++] = '-';
        Convert.TryToHexStringLower(random, id[length..], out int hex);
        return new string(id[..(length + hex)]);
    }

    public static bool IsValidId(string id) => IdPattern().IsMatch(id);

    // Writes the message and its metadata; returns when both are on disk. IOException on failure
    // (disk full, permissions), with nothing left behind under the final names.
    public QuarantineEntry Add(QuarantineEntry entry, IMessageContent message)
    {
        var id = entry.Id.Length > 0 ? entry.Id : NewId(entry.Time);
        entry = entry with { Id = id, Size = message.Length };
        EnsureFolder();
        DurableFile.Write(Folder, id + MessageExtension, file => ContentStream.CopyWhole(message, file));
        try
        {
            DurableFile.Write(Folder, id + MetadataExtension, file => JsonSerializer.Serialize(file, entry, QuarantineJson.Default.QuarantineEntry));
        }
        catch (IOException)
        {
            DurableFile.TryDelete(Path.Combine(Folder, id + MessageExtension));
            throw;
        }

        return entry;
    }

    // Every entry, oldest first; broken ones come back with Problem set.
    public IReadOnlyList<QuarantineListing> List()
    {
        if (!Directory.Exists(Folder))
        {
            return [];
        }

        var ids = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var path in Directory.EnumerateFiles(Folder))
        {
            var name = Path.GetFileName(path);
            if (name.StartsWith('.'))
            {
                continue; // a write in progress or left by a crash
            }

            var id = Path.GetFileNameWithoutExtension(name);
            var extension = Path.GetExtension(name);
            if ((extension == MessageExtension || extension == MetadataExtension) && IsValidId(id))
            {
                ids.Add(id);
            }
        }

        var result = new List<QuarantineListing>(ids.Count);
        foreach (var id in ids)
        {
            try
            {
                result.Add(new QuarantineListing(id, Get(id), null));
            }
            catch (QuarantineException e)
            {
                result.Add(new QuarantineListing(id, null, e.Message));
            }
        }

        return result;
    }

    // The metadata of one entry; QuarantineException when it is missing, incomplete or corrupt.
    public QuarantineEntry Get(string id)
    {
        var (metadata, message) = Paths(id);
        var hasMetadata = File.Exists(metadata);
        var hasMessage = File.Exists(message);
        if (!hasMetadata && !hasMessage)
        {
            throw new QuarantineException($"no quarantine entry {id} in {Folder}");
        }

        if (!hasMetadata)
        {
            throw new QuarantineException($"quarantine entry {id} is incomplete: {metadata} is missing");
        }

        if (!hasMessage)
        {
            throw new QuarantineException($"quarantine entry {id} is incomplete: {message} is missing");
        }

        QuarantineEntry? entry;
        try
        {
            using var file = UnixFile.OpenOwnedRegularFile(metadata, ServiceUser);
            entry = JsonSerializer.Deserialize(file, QuarantineJson.Default.QuarantineEntry);
        }
        catch (JsonException e)
        {
            throw new QuarantineException($"quarantine entry {id} is corrupt: {metadata}: {e.Message}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new QuarantineException($"cannot read quarantine entry {id}: {e.Message}");
        }

        if (entry is null || entry.Id != id)
        {
            throw new QuarantineException($"quarantine entry {id} is corrupt: {metadata} does not describe entry {id}");
        }

        // The envelope goes back on the wire at release: only what an SMTP path can hold.
        if (!IsPath(entry.Sender, allowNull: true))
        {
            throw new QuarantineException($"quarantine entry {id} is corrupt: the sender {entry.Sender} is not a mail address");
        }

        foreach (var recipient in entry.Recipients)
        {
            if (!IsPath(recipient ?? "", allowNull: false))
            {
                throw new QuarantineException($"quarantine entry {id} is corrupt: the recipient {recipient} is not a mail address");
            }
        }

        return entry;
    }

    public FileStream OpenMessage(string id)
    {
        var (_, message) = Paths(id);
        try
        {
            return UnixFile.OpenOwnedRegularFile(message, ServiceUser);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new QuarantineException($"cannot read the message of quarantine entry {id}: {e.Message}");
        }
    }

    private static bool IsPath(string mailbox, bool allowNull) =>
        SmtpCore.Protocol.SmtpPath.TryParse("<" + mailbox + ">", allowNull, out _, out _);

    private static string ModeText(UnixFileMode mode) => "0" + Convert.ToString((int)mode & 0x1FF, 8);

    // Removes both files (whatever state the entry is in); false when there was nothing.
    public bool Delete(string id)
    {
        var (metadata, message) = Paths(id);
        var existed = File.Exists(metadata) || File.Exists(message);
        try
        {
            // Metadata first: a half-deleted entry is then a leftover .eml, never a listing without its message.
            File.Delete(metadata);
            File.Delete(message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new QuarantineException($"cannot delete quarantine entry {id}: {e.Message}");
        }

        if (existed)
        {
            DurableFile.SyncFolder(Folder);
        }

        return existed;
    }

    // Deletes entries older than `cutoff` (by their recorded time, or by file time when the metadata
    // is broken) and temporary files a crashed write left behind. Returns the number of entries removed.
    public int Purge(DateTimeOffset cutoff)
    {
        if (!Directory.Exists(Folder))
        {
            return 0;
        }

        var removed = 0;
        foreach (var listing in List())
        {
            var time = listing.Entry?.Time ?? NewestFileTime(listing.Id);
            if (time < cutoff && Delete(listing.Id))
            {
                removed++;
            }
        }

        foreach (var temp in Directory.EnumerateFiles(Folder, "." + "*" + DurableFile.TempSuffix))
        {
            if (File.GetLastWriteTimeUtc(temp) < cutoff.UtcDateTime && File.GetLastWriteTimeUtc(temp) < DateTime.UtcNow.AddDays(-1))
            {
                DurableFile.TryDelete(temp);
            }
        }

        return removed;
    }

    private DateTimeOffset NewestFileTime(string id)
    {
        var (metadata, message) = Paths(id);
        var times = new[] { metadata, message }.Where(File.Exists).Select(p => new DateTimeOffset(File.GetLastWriteTimeUtc(p), TimeSpan.Zero));
        return times.DefaultIfEmpty(DateTimeOffset.MaxValue).Max();
    }

    private (string Metadata, string Message) Paths(string id)
    {
        if (!IsValidId(id))
        {
            throw new QuarantineException($"\"{id}\" is not a quarantine id (expected the form 20240101-120000-1a2b3c4d, as `portcullis quarantine list` shows)");
        }

        return (Path.Combine(Folder, id + MetadataExtension), Path.Combine(Folder, id + MessageExtension));
    }

    [GeneratedRegex("^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$")]
    private static partial Regex IdPattern();
}

public sealed record QuarantineListing(string Id, QuarantineEntry? Entry, string? Problem);

// A quarantine entry that is missing or broken, or an id that is not one; the message is for
// operators' terminals, so it carries no control characters of its own.
public sealed class QuarantineException(string message) : Exception(TerminalText.Escape(message));
