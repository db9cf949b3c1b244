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
