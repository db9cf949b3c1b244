// Warnings `portcullis check-config` adds about the machine it runs on: a signature folder with no
// databases yet (the first start before freshclam), a port 25 listener without STARTTLS, and
// whether the service user (the unit's User=, portcullis) can read the certificate, the key and
// the password file and write the folders. Warnings, not errors: the file may be checked on
// another machine, and a missing user is a package not yet installed.
//
// The access check works from the user's uid and groups (/etc/passwd, /etc/group, and the unit's
// SupplementaryGroups=) against each path's owner and mode bits, every directory on the way
// needing search (x) permission. POSIX ACLs are not read. root passes every check.
using System.Runtime.InteropServices;

namespace Portcullis.Appliance.Configuration;

public static class ConfigChecks
{
    public const string ServiceUser = "portcullis";

    public static readonly string[] UnitFiles =
    [
        "/etc/systemd/system/portcullis.service",
        "/lib/systemd/system/portcullis.service",
        "/usr/lib/systemd/system/portcullis.service",
    ];

    public static IEnumerable<string> Warnings(GatewayConfig config) =>
        Warnings(config, ServiceAccount.FromSystem(UnitFiles, "/etc/passwd", "/etc/group"));

    internal static IEnumerable<string> Warnings(GatewayConfig config, ServiceAccount? account)
    {
        var folder = config.Scan.DatabaseFolder;
        if (Directory.Exists(folder) && !SignatureDatabases.Present(folder))
        {
            yield return SignatureDatabases.FirstStartAdvice(folder);
        }

        if (!config.Tls.Enabled && config.General.Interfaces.FirstOrDefault(i => i.EndPoint.Port == 25 && !i.Tls) is { } plain)
        {
            yield return $"[general] interfaces {plain} is port 25 without STARTTLS: mail servers that send over TLS (Postfix offers it " +
                         "by default) will send in clear; set [tls] certificate and key" +
                         (config.Tls.FromDefault && File.Exists(TlsSection.SnakeoilCertificate)
                             ? $" (Debian's snakeoil pair is there, but {TlsSection.SnakeoilKey} is not readable by this process)"
                             : " (Debian's ssl-cert package makes a snakeoil pair)");
        }

        if (config.Queue.Mode != QueueMode.Off && config.Relay.RecipientsFile.Length == 0)
        {
            yield return $"[queue] mode = {config.Queue.Mode.ToString().ToLowerInvariant()} without [relay] recipients_file: mail queued for " +
                         "unknown local recipients is accepted and bounced later (backscatter to forged senders); list the valid recipients there";
        }

        foreach (var warning in AccessWarnings(config, account))
        {
            yield return warning;
        }

        if (Runtime.OpenFileLimit.Read() is { } files && OpenFileWarning(config.Limits.MaxConnections, files.Hard) is { } tooFew)
        {
            yield return tooFew;
        }
    }

    // `run` raises its soft RLIMIT_NOFILE to the hard limit; past that, sessions fail to accept.
    internal static string? OpenFileWarning(int maxConnections, ulong hardLimit)
    {
        var needed = Runtime.OpenFileLimit.Needed(maxConnections);
        if (maxConnections == 0 || needed <= hardLimit)
        {
            return null;
        }

        var sessions = hardLimit > Runtime.OpenFileLimit.Reserve ? (hardLimit - Runtime.OpenFileLimit.Reserve) / Runtime.OpenFileLimit.PerSession : 0;
        return $"[limits] max_connections {maxConnections} needs about {needed} open files ({Runtime.OpenFileLimit.PerSession} per session " +
               $"and {Runtime.OpenFileLimit.Reserve} more), but the open file limit (RLIMIT_NOFILE hard limit here: {hardLimit}) allows " +
               $"about {sessions} sessions; raise LimitNOFILE= in the unit (or ulimit -Hn) or lower max_connections";
    }

    private static IEnumerable<string> AccessWarnings(GatewayConfig config, ServiceAccount? account)
    {
        if (account is null)
        {
            yield return $"service user {ServiceUser} does not exist on this machine: cannot check that it can read the certificate, key and password file " +
                         "and write the folders (the package creates it)";
            yield break;
        }

        (string Key, string Path)[] reads =
        [
            ("[tls] certificate", config.Tls.Certificate),
            ("[tls] key", config.Tls.Key),
            ("[auth] passwd_file", config.Auth.PasswdFile),
        ];
        foreach (var (key, path) in reads)
        {
            if (path.Length > 0 && File.Exists(path) && account.Denied(path, FileAccess.Read) is { } why)
            {
                var hint = key == "[tls] key" && why.Contains("ssl-cert", StringComparison.Ordinal)
                    ? "; add SupplementaryGroups=ssl-cert to the unit (or the user to group ssl-cert)"
                    : "";
                yield return $"{key} {path}: service user {account.Name} cannot read it ({why}){hint}";
            }
        }

        if (Directory.Exists(config.Scan.DatabaseFolder) && account.Denied(config.Scan.DatabaseFolder, FileAccess.Read) is { } dbWhy)
        {
            yield return $"[scan] database_folder {config.Scan.DatabaseFolder}: service user {account.Name} cannot read it ({dbWhy})";
        }

        (string Key, string Path)[] writes =
        [
            ("[general] temp_folder", config.General.TempFolder),
            ("[general] queue_folder", config.General.QueueFolder),
            ("[quarantine] folder", config.Quarantine.Folder),
            ("[log] folder", config.Log.Folder),
        ];
        foreach (var (key, path) in writes)
        {
            if (path.Length > 0 && Directory.Exists(path) && account.Denied(path, FileAccess.Write) is { } why)
            {
                yield return $"{key} {path}: service user {account.Name} cannot write there ({why})";
            }
        }
    }
}

// What libclamav loads signatures from (cl_load's database extensions), and what to do when a
// folder has none.
public static class SignatureDatabases
{
    private static readonly HashSet<string> Extensions = new(StringComparer.OrdinalIgnoreCase)
    {
        ".cvd", ".cld", ".cud", ".db", ".hdb", ".hdu", ".hsb", ".hsu", ".mdb", ".mdu", ".msb", ".msu",
        ".ndb", ".ndu", ".ldb", ".ldu", ".idb", ".cdb", ".pdb", ".gdb", ".wdb", ".cbc", ".yar", ".yara",
        ".pwdb", ".sdb", ".zmd", ".rmd",
    };

    // True when the folder holds at least one signature database file.
    public static bool Present(string folder)
    {
        try
        {
            return Directory.EnumerateFiles(folder).Any(f => Extensions.Contains(Path.GetExtension(f)) && !Path.GetFileName(f).StartsWith('.'));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    public static string FirstStartAdvice(string folder) =>
        $"[scan] database_folder {folder} has no virus signatures yet: mail gets 451 4.3.0 until they arrive. " +
        "Start clamav-freshclam (systemctl enable --now clamav-freshclam) to download them, or point database_folder " +
        "at a folder with .cvd, .cld or .cud files; the gateway loads them as soon as they appear";
}

// The service user as the kernel would see it: uid, primary and supplementary gids.
internal sealed partial class ServiceAccount(string name, uint uid, IReadOnlySet<uint> gids, IReadOnlyDictionary<uint, string> groupNames)
{
    public string Name { get; } = name;

    public uint Uid { get; } = uid;

    public IReadOnlySet<uint> Gids { get; } = gids;

    // null when the user may; otherwise why not (naming the path that stops it).
    public string? Denied(string path, FileAccess access)
    {
        if (Uid == 0)
        {
            return null;
        }

        var full = Path.GetFullPath(path);
        var parts = new List<string>();
        for (var dir = Path.GetDirectoryName(full); dir is not null; dir = Path.GetDirectoryName(dir))
        {
            parts.Insert(0, dir);
        }

        foreach (var dir in parts)
        {
            if (!Allows(dir, execute: true, read: false, write: false, out var why))
            {
                return why;
            }
        }

        var isFolder = Directory.Exists(full);
        var ok = access == FileAccess.Read
            ? Allows(full, execute: isFolder, read: true, write: false, out var reason)
            : Allows(full, execute: isFolder, read: false, write: true, out reason);
        return ok ? null : reason;
    }

    private bool Allows(string path, bool execute, bool read, bool write, out string why)
    {
        why = "";
        if (FileOwner(path) is not { } owner)
        {
            why = $"cannot stat {path}";
            return false;
        }

        var mode = (int)owner.Mode;
        int bits = owner.Uid == Uid ? (mode >> 6) & 7 : Gids.Contains(owner.Gid) ? (mode >> 3) & 7 : mode & 7;
        var wanted = (read ? 4 : 0) | (write ? 2 : 0) | (execute ? 1 : 0);
        if ((bits & wanted) == wanted)
        {
            return true;
        }

        var group = groupNames.TryGetValue(owner.Gid, out var g) ? g : owner.Gid.ToString(System.Globalization.CultureInfo.InvariantCulture);
        why = $"{path} is mode {Convert.ToString(mode & 0x1FF, 8)}, group {group}";
        return false;
    }

    // The unit's User= (default portcullis) and SupplementaryGroups=, resolved in the local files;
    // null when the user does not exist.
    public static ServiceAccount? FromSystem(IEnumerable<string> unitFiles, string passwdPath, string groupPath)
    {
        var user = ConfigChecks.ServiceUser;
        var extraGroups = new List<string>();
        var unit = unitFiles.FirstOrDefault(File.Exists);
        if (unit is not null)
        {
            foreach (var line in ReadLines(unit))
            {
                var text = line.Trim();
                if (text.StartsWith("User=", StringComparison.Ordinal) && text.Length > 5) user = text[5..].Trim();
                if (text.StartsWith("SupplementaryGroups=", StringComparison.Ordinal))
                    extraGroups.AddRange(text["SupplementaryGroups=".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
            }
        }

        return FromFiles(user, extraGroups, ReadLines(passwdPath), ReadLines(groupPath));
    }

    internal static ServiceAccount? FromFiles(string user, IEnumerable<string> extraGroups, IEnumerable<string> passwd, IEnumerable<string> group)
    {
        var entry = passwd.Select(l => l.Split(':')).FirstOrDefault(f => f.Length >= 4 && f[0] == user);
        if (entry is null || !uint.TryParse(entry[2], out var uid) || !uint.TryParse(entry[3], out var gid))
        {
            return null;
        }

        var gids = new HashSet<uint> { gid };
        var names = new Dictionary<uint, string>();
        var extra = extraGroups.ToHashSet(StringComparer.Ordinal);
        foreach (var fields in group.Select(l => l.Split(':')).Where(f => f.Length >= 4))
        {
            if (!uint.TryParse(fields[2], out var id))
            {
                continue;
            }

            names[id] = fields[0];
            if (extra.Contains(fields[0]) || fields[3].Split(',').Contains(user))
            {
                gids.Add(id);
            }
        }

        return new ServiceAccount(user, uid, gids, names);
    }

    private static IEnumerable<string> ReadLines(string path)
    {
        try
        {
            return File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    // st_mode, st_uid and st_gid of stat(2): their offsets differ between the x86_64 and the
    // generic (aarch64) struct stat.
    private static (uint Mode, uint Uid, uint Gid)? FileOwner(string path)
    {
        var buffer = new byte[256];
        try
        {
            if (stat(path, ref buffer[0]) != 0)
            {
                return null;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }

        var x64 = RuntimeInformation.ProcessArchitecture == Architecture.X64;
        var (mode, uid) = x64 ? (24, 28) : (16, 24);
        return (BitConverter.ToUInt32(buffer, mode), BitConverter.ToUInt32(buffer, uid), BitConverter.ToUInt32(buffer, uid + 4));
    }

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int stat(string path, ref byte buffer);
}
