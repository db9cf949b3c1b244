using System.Net;
using Portcullis.Appliance.Policy;

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
    public QuarantineSection Quarantine { get; init; } = new();
    public NotificationSection Notification { get; init; } = new();

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

    // Notifications waiting to be sent live here, so a restart loses none.
    public string OutboxFolder => Path.Combine(QueueFolder, "outbox");

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

    // What happens to a message with a detection; the per-class keys default to Action (null here).
    public DetectionAction Action { get; init; } = DetectionAction.Reject;
    public DetectionAction? ActionPua { get; init; }
    public DetectionAction? ActionHeuristics { get; init; }
    public DetectionAction? ActionPhishing { get; init; }
    public DetectionAction? ActionUnofficial { get; init; }
    public DetectionAction? ActionBanned { get; init; }

    public string TagSubjectPrefix { get; init; } = "[VIRUS] ";

    // Attachment names and types refused whatever their content (BannedAttachments has the rules).
    public ValueList<string> BannedExtensions { get; init; } = BannedAttachments.DefaultExtensions;
    public bool BanDoubleExtensions { get; init; } = true;
    public ValueList<string> BannedContentTypes { get; init; } = BannedAttachments.DefaultContentTypes;
    public EncryptedArchivePolicy EncryptedArchives { get; init; } = EncryptedArchivePolicy.Allow;

    public DetectionAction ActionFor(DetectionClass detectionClass) => detectionClass switch
    {
        DetectionClass.Pua => ActionPua ?? Action,
        DetectionClass.Heuristics => ActionHeuristics ?? Action,
        DetectionClass.Phishing => ActionPhishing ?? Action,
        DetectionClass.Unofficial => ActionUnofficial ?? Action,
        DetectionClass.Banned => ActionBanned ?? Action,
        _ => Action,
    };
}

public enum DetectionAction
{
    Reject,
    Discard,
    Strip,
    Tag,
}

public enum EncryptedArchivePolicy
{
    Allow,
    Block,
}

public sealed record QuarantineSection
{
    public string Folder { get; init; } = "/var/lib/portcullis/quarantine";

    // Keep a copy of every message with a detection, whatever the action (discard always keeps one).
    public bool Copy { get; init; } = true;

    // Entries older than this are purged once a day; 0 keeps them for ever.
    public int RetentionDays { get; init; } = 30;
}

public sealed record NotificationSection
{
    // Empty address: the [general] mail server; no port: [general] smtp_server_port.
    public string SmtpServerAddress { get; init; } = "";
    public int? SmtpServerPort { get; init; }

    // The From of notifications; empty: postmaster@<hostname>.
    public string Sender { get; init; } = "";

    // Administrators told about every detection.
    public ValueList<string> NotifyList { get; init; } = ValueList<string>.Empty;
    public bool NotifyRecipients { get; init; } = true;

    // Off by default: the envelope sender of a virus is almost always forged (backscatter).
    public bool NotifySender { get; init; }
    public string TemplateFolder { get; init; } = "/etc/portcullis/templates";

    public string SenderAddress(string hostname) => Sender.Length > 0 ? Sender : "postmaster@" + hostname;
}

// An immutable list that compares by its items, so the config records keep value equality.
public sealed class ValueList<T> : IReadOnlyList<T>, IEquatable<ValueList<T>>
{
    private readonly T[] _items;

    public ValueList(IEnumerable<T> items) => _items = [.. items];

    public static ValueList<T> Empty { get; } = new([]);

    public int Count => _items.Length;

    public T this[int index] => _items[index];

    public bool Equals(ValueList<T>? other) => other is not null && _items.AsSpan().SequenceEqual(other._items);

    public override bool Equals(object? obj) => Equals(obj as ValueList<T>);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (var item in _items)
        {
            hash.Add(item);
        }

        return hash.ToHashCode();
    }

    public IEnumerator<T> GetEnumerator() => ((IEnumerable<T>)_items).GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => _items.GetEnumerator();

    public override string ToString() => string.Join(", ", _items);
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
