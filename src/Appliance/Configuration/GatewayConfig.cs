using System.Net;

namespace Portcullis.Appliance.Configuration;

// The typed, validated configuration of one gateway process. Built only by ConfigLoader; every
// record is immutable and `with` expressions give tests variations of it. The initialisers are
// the defaults: a record built with `new` holds what an empty INI file yields.
public sealed record GatewayConfig
{
    public required string SourcePath { get; init; }
    public GeneralSection General { get; init; } = new();
    public ScanSection Scan { get; init; } = new();
    public LimitsSection Limits { get; init; } = new();
    public LogSection Log { get; init; } = new();
    public StatusSection Status { get; init; } = new();

    // What an empty file gives (hostname from this machine).
    public static GatewayConfig Defaults => new() { SourcePath = "(defaults)" };
}

public sealed record GeneralSection
{
    public IReadOnlyList<ListenEndpoint> Interfaces { get; init; } =
    [
        new(new IPEndPoint(IPAddress.Any, 25), ListenEndpoint.NoFlags),
        new(new IPEndPoint(IPAddress.IPv6Any, 25), ListenEndpoint.NoFlags),
    ];

    public string Hostname { get; init; } = DefaultHostname();

    // An IP address literal (IPv6 without brackets) or a host name.
    public string SmtpServerAddress { get; init; } = "127.0.0.1";
    public int SmtpServerPort { get; init; } = 2525;

    // How long to wait for each reply of the downstream server.
    public TimeSpan SmtpServerTimeout { get; init; } = TimeSpan.FromMinutes(5);

    public string TempFolder { get; init; } = "/var/lib/portcullis/tmp";
    public string QueueFolder { get; init; } = "/var/spool/portcullis";

    // After SIGTERM: how long open transactions may take to finish before connections are cut.
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);

    // The Unix socket `portcullis reload` and `portcullis status` talk to; empty: none.
    public string ControlSocket { get; init; } = "/run/portcullis/control.sock";

    internal static string DefaultHostname()
    {
        try
        {
            var name = Dns.GetHostName();
            return string.IsNullOrWhiteSpace(name) ? "localhost" : name;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return "localhost";
        }
    }
}

public sealed record ScanSection
{
    public string DatabaseFolder { get; init; } = "/var/lib/clamav";
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(2);
    public ScanErrorAction OnError { get; init; } = ScanErrorAction.Tempfail;
    public int ScannerThreads { get; init; } = Math.Clamp(Environment.ProcessorCount, 1, 256);

    // How many messages may wait for a free scanner thread.
    public int QueueLength { get; init; } = 64;

    // libclamav limits; 0 means no limit, as in clamd.conf.
    public long MaxScanSize { get; init; } = 400L << 20;
    public long MaxFileSize { get; init; } = 100L << 20;
    public int MaxRecursion { get; init; } = 17;
    public int MaxFiles { get; init; } = 10000;

    // Treat content that exceeds a limit as infected (Heuristics.Limits.Exceeded.*).
    public bool AlertExceedsMax { get; init; }

    // Where libclamav unpacks while scanning; empty means temp_folder. A tmpfs here saves a
    // directory create/remove on disk per message (about 10x faster small-message scans on ext4).
    public string ScratchFolder { get; init; } = "";

    // How often database_folder is checked for changes (cl_statchkdir); Zero: never.
    public TimeSpan ReloadCheckInterval { get; init; } = TimeSpan.FromMinutes(5);

    public ReloadMemory ReloadMemory { get; init; } = ReloadMemory.Concurrent;

    // Older signatures than this are warned about in the log and on the status page.
    public TimeSpan MaxDefinitionsAge { get; init; } = TimeSpan.FromDays(3);
}

// How a signature reload uses memory: Concurrent builds the new engine while the old one goes on
// scanning (twice the engine's memory for a while); Low frees the old engine first and holds
// new scans until the new one is ready (for small machines such as a Raspberry Pi).
public enum ReloadMemory
{
    Concurrent,
    Low,
}

public enum ScanErrorAction
{
    Tempfail,
    Pass,
}

public sealed record LimitsSection
{
    public long MaxMessageSize { get; init; } = 50L << 20;
    public int MaxRecipients { get; init; } = 1000;

    // Cap on one command line, CRLF included.
    public int MaxLineLength { get; init; } = 2048;

    // Bad commands tolerated before the session is closed.
    public int MaxErrors { get; init; } = 10;
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromMinutes(5);
    public TimeSpan DataTimeout { get; init; } = TimeSpan.FromMinutes(3);

    // Messages larger than this spill from pooled memory to a file in temp_folder.
    public long MemoryThreshold { get; init; } = 8L << 20;
    public BareNewlinePolicy BareNewline { get; init; } = BareNewlinePolicy.Normalize;
}

// What to do with a bare LF or CR inside DATA (SMTP smuggling defence).
public enum BareNewlinePolicy
{
    Normalize,
    Reject,
}

public sealed record LogSection
{
    // Empty: message lines go to stdout only.
    public string Folder { get; init; } = "";
}

public sealed record StatusSection
{
    // Where the HTTP status page and /metrics are served; null: nowhere.
    public IPEndPoint? Listen { get; init; } = new(IPAddress.Loopback, 9025);
}

// One listening socket: an IP endpoint and flags such as "tls" (implicit TLS) and "proxy" (PROXY protocol).
public sealed record ListenEndpoint(IPEndPoint EndPoint, IReadOnlySet<string> Flags)
{
    public const string TlsFlag = "tls";
    public const string ProxyFlag = "proxy";

    public static readonly IReadOnlySet<string> NoFlags = new HashSet<string>(StringComparer.Ordinal);

    public bool Tls => Flags.Contains(TlsFlag);
    public bool Proxy => Flags.Contains(ProxyFlag);

    // The syntax it was written in: 0.0.0.0:465/tls, [::1]:25/proxy.
    public override string ToString()
    {
        var text = EndPoint.ToString();
        foreach (var flag in Flags.Order(StringComparer.Ordinal))
        {
            text += "/" + flag;
        }

        return text;
    }
}
