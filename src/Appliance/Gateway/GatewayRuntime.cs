// The running daemon's shared state beyond one configuration: the current context (replaced by
// a configuration reload), the engine holder and scanner pool, counters, the systemd notifier
// and the reloader. The status page, `portcullis status`, STATUS= and /metrics read it.
using System.Globalization;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Status;
using Portcullis.Appliance.Systemd;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Gateway;

internal sealed class GatewayRuntime
{
    private GatewayContext context;

    public GatewayRuntime(string configPath, GatewayContext context, SystemdNotifier notifier)
    {
        ConfigPath = configPath;
        this.context = context;
        Notifier = notifier;
        Reloader = new SignatureReloader(this);
    }

    public string ConfigPath { get; }

    public GatewayContext Context => Volatile.Read(ref context);

    public EngineHolder Engines => Context.Engines;

    public ScannerPool Scanners => Context.Scanners;

    public GatewayMetrics Metrics => Context.Metrics;

    public SystemdNotifier Notifier { get; }

    public SignatureReloader Reloader { get; }

    // True once READY=1 went to systemd (signatures loaded); before that a reload sends neither
    // RELOADING=1 nor READY=1, only STATUS=.
    public bool IsReady => Volatile.Read(ref ready);

    private bool ready;

    public void MarkReady() => Volatile.Write(ref ready, true);

    // Set by the host: false once an accept loop has ended while the gateway was not stopping.
    public Func<bool> AcceptLoopsAlive { get; set; } = static () => true;

    // Makes `next` the configuration of new sessions; returns the keys whose change needs a restart.
    // Relay rules, the certificate (renewed files included) and the password file are loaded
    // afresh; a file that cannot be loaded throws InvalidDataException and nothing changes.
    public IReadOnlyList<string> ApplyConfiguration(GatewayConfig next)
    {
        var access = GatewayAccess.Load(next);
        var old = Context.Config;
        var restart = new List<string>();
        if (!old.General.Interfaces.Select(i => i.ToString()).SequenceEqual(next.General.Interfaces.Select(i => i.ToString())))
        {
            restart.Add("[general] interfaces");
        }

        if (old.General.ControlSocket != next.General.ControlSocket)
        {
            restart.Add("[general] control_socket");
        }

        if (old.Scan.ScannerThreads != next.Scan.ScannerThreads)
        {
            restart.Add("[scan] scanner_threads");
        }

        if (old.Scan.QueueLength != next.Scan.QueueLength)
        {
            restart.Add("[scan] queue_length");
        }

        if (!Equals(old.Status.Listen, next.Status.Listen))
        {
            restart.Add("[status] listen");
        }

        if (old.Log.Folder != next.Log.Folder)
        {
            restart.Add("[log] folder");
        }

        if (old.Quarantine != next.Quarantine)
        {
            restart.Add("[quarantine]");
        }

        if (old.Notification != next.Notification)
        {
            restart.Add("[notification]");
        }

        // Connection limits count live connections and are built once at start.
        foreach (var (name, changed) in new[]
                 {
                     ("[general] proxy_trusted", !Equals(old.General.ProxyTrusted, next.General.ProxyTrusted)),
                     ("[queue] concurrency", old.Queue.Concurrency != next.Queue.Concurrency),
                     ("[queue] max_size", old.Queue.MaxSize != next.Queue.MaxSize),
                     ("[limits] max_connections", old.Limits.MaxConnections != next.Limits.MaxConnections
                                                  || old.Limits.MaxConnectionsPerIp != next.Limits.MaxConnectionsPerIp),
                 })
        {
            if (changed)
            {
                restart.Add(name);
            }
        }

        // Everything else (limits, scan settings, downstream, hostname, timeouts) applies to new
        // sessions at once; engine settings with the signatures reloaded right after.
        Messages.MessageMemoryBudget.Shared.Limit = Messages.MessageMemoryBudget.LimitFor(next.Limits.MemoryBudget);
        Volatile.Write(ref context, Context.WithConfig(next, access));
        return restart;
    }

    public TimeSpan? DefinitionsAge() =>
        Engines.TryGetCurrent(out var engine) && engine.DatabaseTime is { } time ? DateTimeOffset.UtcNow - time : null;

    public bool DefinitionsOutdated => DefinitionsAge() is { } age && age > Context.Config.Scan.MaxDefinitionsAge;

    // One line for systemd's STATUS= (shown by systemctl status).
    public string StatusLine()
    {
        var m = Metrics;
        var engine = Engines.TryGetCurrent(out var e)
            ? $"{e.SignatureCount} signatures ({e.DatabaseVersion}{(DefinitionsOutdated ? ", OUTDATED" : "")})"
            : "NO signatures loaded";
        var failed = Reloader.LastReloadFailed ? "; last reload FAILED" : "";
        return $"{engine}{failed}; {m.MessageCount} messages, {m.MessagesWith("infected")} infected; " +
               $"{m.ConnectionsActive} connections, scanner queue {Scanners.QueueDepth}";
    }

    // The plain-text summary `portcullis status` prints (the status page shows the same facts).
    public string Summary()
    {
        var m = Metrics;
        var config = Context.Config;
        var lines = new List<string>
        {
            $"portcullis {GatewayContext.ProductVersion}, libclamav {ClamAV.Version}, up {FormatAge(DateTimeOffset.UtcNow - m.Started)}",
        };
        if (Engines.TryGetCurrent(out var engine))
        {
            var age = DefinitionsAge();
            lines.Add($"signatures: {engine.SignatureCount} (database {engine.DatabaseVersion}) from {config.Scan.DatabaseFolder}");
            lines.Add($"database age: {(age is null ? "unknown" : FormatAge(age.Value))}" +
                      (DefinitionsOutdated ? $" -- OUTDATED (max_definitions_age {ConfigValues.FormatTime(config.Scan.MaxDefinitionsAge)})" : ""));
        }
        else
        {
            lines.Add($"signatures: NONE loaded from {config.Scan.DatabaseFolder}; messages are deferred");
        }

        lines.Add($"last reload: {(Reloader.LastReloadTime is { } t ? t.ToString("u", CultureInfo.InvariantCulture) + " " : "")}" +
                  $"{(Reloader.LastReloadFailed ? "FAILED " : "")}{Reloader.LastReloadText}{(Reloader.IsReloading ? " (a reload is running)" : "")}");
        lines.Add($"connections: {m.ConnectionsActive} open, {m.ConnectionsTotal} since start");
        lines.Add($"messages: {m.MessageCount} ({string.Join(", ", m.Messages().Select(x => $"{x.Verdict}/{x.Action} {x.Count}"))}), {m.Bytes} bytes");
        lines.Add($"scanners: {Scanners.Busy}/{Scanners.ThreadCount} busy, {Scanners.QueueDepth} queued");
        lines.Add($"downstream errors: {m.DownstreamErrors}");
        var quarantine = QuarantineSize(config);
        if (quarantine is { } q)
        {
            lines.Add($"quarantine: {q.Entries} entries, {q.Bytes} bytes");
        }

        foreach (var d in m.LastDetections().Take(5))
        {
            lines.Add($"detected: {d.Time:u} {d.Virus} from {d.From} ({d.Client}) {d.Action}");
        }

        return string.Join("\n", lines) + "\n";
    }

    // The quarantine folder's content, if the folder exists: entries (an id with its .eml and
    // .json counts once, as `portcullis quarantine list` shows it) and the bytes of all files.
    public static (int Entries, long Bytes)? QuarantineSize(GatewayConfig config)
    {
        var folder = config.Quarantine.Folder;
        try
        {
            if (!Directory.Exists(folder))
            {
                return null;
            }

            var ids = new HashSet<string>(StringComparer.Ordinal);
            long bytes = 0;
            foreach (var file in new DirectoryInfo(folder).EnumerateFiles("*", SearchOption.AllDirectories))
            {
                bytes += file.Length;
                var id = Path.GetFileNameWithoutExtension(file.Name);
                if (!file.Name.StartsWith('.') && file.Extension is Quarantine.QuarantineStore.MessageExtension or Quarantine.QuarantineStore.MetadataExtension
                    && Quarantine.QuarantineStore.IsValidId(id))
                {
                    ids.Add(id);
                }
            }

            return (ids.Count, bytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    public static string FormatAge(TimeSpan age)
    {
        if (age < TimeSpan.Zero)
        {
            age = TimeSpan.Zero;
        }

        return age.TotalDays >= 1 ? $"{(int)age.TotalDays}d {age.Hours}h"
            : age.TotalHours >= 1 ? $"{(int)age.TotalHours}h {age.Minutes}m"
            : age.TotalMinutes >= 1 ? $"{(int)age.TotalMinutes}m {age.Seconds}s"
            : $"{(int)age.TotalSeconds}s";
    }
}
