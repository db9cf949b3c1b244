using System.Net;
using Portcullis.Appliance.Policy;
using Portcullis.SmtpCore.Protocol;

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
    public RelaySection Relay { get; init; } = new();
    public AuthSection Auth { get; init; } = new();
    public TlsSection Tls { get; init; } = new();
    public StatusSection Status { get; init; } = new();
    public QueueSection Queue { get; init; } = new();

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
    // Notifications waiting to be sent live here, so a restart loses none.
    public string OutboxFolder => Path.Combine(QueueFolder, "outbox");
    // Who may put a PROXY protocol header in front of a connection on a /proxy listener.
    public NetworkList ProxyTrusted { get; init; } = NetworkList.Loopback;

    // STARTTLS towards the downstream server, and whether its certificate must verify.
    public SmtpServerTlsMode SmtpServerTls { get; init; } = SmtpServerTlsMode.None;
    public bool SmtpServerTlsVerify { get; init; } = true;

    // Empty: the system's trusted CAs.
    public string SmtpServerCaFile { get; init; } = "";

    // auto: XCLIENT when the mail server offers it (it then judges the real client), else XFORWARD.
    public bool SmtpServerXClient { get; init; } = true;

    // smtp_server_address as a list, tried in order (failover); Port null: SmtpServerPort.
    // Empty: SmtpServerAddress alone on SmtpServerPort. SmtpServerAddress and SmtpServerPort are
    // always the first server's (the loader resolves every entry's port).
    public IReadOnlyList<MailServerAddress> SmtpServerAddresses { get; init; } = [];

    // Every server to try, in order, with its port.
    public IEnumerable<(string Host, int Port)> SmtpServers => SmtpServerAddresses.Count == 0
        ? [(SmtpServerAddress, SmtpServerPort)]
        : SmtpServerAddresses.Select(a => (a.Host, a.Port ?? SmtpServerPort));

    // The servers as the logs and check-config name them: 127.0.0.1:2525, [::1]:25, mx.example.com:25.
    public string SmtpServerList => string.Join(", ", SmtpServers.Select(s =>
        IPAddress.TryParse(s.Host, out var address) ? new IPEndPoint(address, s.Port).ToString() : $"{s.Host}:{s.Port}"));

    // At most this many connections to the mail server at once, shared by all client sessions;
    // 0: as many as [limits] max_connections (a transaction in progress holds one outside DATA,
    // so a lower bound makes the clients past it wait at MAIL). Postfix's default_process_limit.
    public int SmtpServerConnections { get; init; } = 100;

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

    // Deprecated: a hard cap on messages waiting for a free scanner thread; 0 (default) is none,
    // and a message then waits up to Timeout (see ScannerPool).
    public int QueueLength { get; init; }

    // libclamav limits; 0 means no limit, as in clamd.conf.
    public long MaxScanSize { get; init; } = 400L << 20;
    public long MaxFileSize { get; init; } = 100L << 20;
    public int MaxRecursion { get; init; } = 17;
    public int MaxFiles { get; init; } = 10000;

    // Treat content that exceeds a limit as infected (Heuristics.Limits.Exceeded.*).
    public bool AlertExceedsMax { get; init; } = true;

    // Where libclamav unpacks while scanning; empty means temp_folder. A tmpfs here saves a
    // directory create/remove on disk per message (about 10x faster small-message scans on ext4).
    public string ScratchFolder { get; init; } = "";

    // How often database_folder is checked for changes (cl_statchkdir); Zero: never.
    public TimeSpan ReloadCheckInterval { get; init; } = TimeSpan.FromMinutes(5);

    public ReloadMemory ReloadMemory { get; init; } = ReloadMemory.Concurrent;

    // Older signatures than this are warned about in the log and on the status page.
    public TimeSpan MaxDefinitionsAge { get; init; } = TimeSpan.FromDays(3);
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
    // libclamav type names (msexe, elf, macho) banned by content whatever the file is called.
    public ValueList<string> BannedTypes { get; init; } = ValueList<string>.Empty;

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

    // Messages larger than this go on to the mail server while they arrive: only the end of the
    // data waits for the verdict, and a message that is not delivered as it came has its data
    // never ended (the server discards it). 0: every message goes on only once scanned.
    public long StreamThreshold { get; init; } = 512L << 10;
    public BareNewlinePolicy BareNewline { get; init; } = BareNewlinePolicy.Normalize;

    // Open client connections in all and from one address; 0 means no limit.
    public int MaxConnections { get; init; } = 2000;
    public int MaxConnectionsPerIp { get; init; } = 20;

    // All message buffers in memory together; past it new messages spill to temp_folder at once.
    // null (auto): 1/8 of RAM or of the cgroup limit (MessageMemoryBudget.DefaultLimit); 0: no limit.
    public long? MemoryBudget { get; init; }
}

public enum SmtpServerTlsMode
{
    None,
    Opportunistic,
    Required,
}

// Who may relay: see Access/RelayPolicy for the order the rules are applied in.
public sealed record RelaySection
{
    public ValueList<string> LocalDomains { get; init; } = ValueList<string>.Empty;
    public string LocalDomainsFile { get; init; } = "";
    public NetworkList TrustedNetworks { get; init; } = NetworkList.Loopback;
    public string RulesFile { get; init; } = "";
    public string PopBeforeSmtpFile { get; init; } = "";
    public TimeSpan PopBeforeSmtpTtl { get; init; } = TimeSpan.FromMinutes(30);

    // Known recipients (addresses and @domain lines) for mail queued while the server cannot be
    // asked; empty: every recipient the relay rules allow is accepted.
    public string RecipientsFile { get; init; } = "";
}

public enum QueueMode
{
    Off,
    Fallback,
    Always,
}

// [queue]: store and forward (Queue/QueueStore, Gateway/QueueDelivery).
public sealed record QueueSection
{
    public QueueMode Mode { get; init; } = QueueMode.Off;
    public int Concurrency { get; init; } = 4;
    public TimeSpan MinBackoff { get; init; } = TimeSpan.FromMinutes(1);
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromHours(1);
    public TimeSpan MaxLifetime { get; init; } = TimeSpan.FromDays(5);

    // Zero: no delay warning.
    public TimeSpan DelayWarning { get; init; } = TimeSpan.Zero;

    // All queued messages together. 2G holds about a day of a small site's mail (40 messages of
    // 50 KB a minute) while its server is away, and stays clear of a small root file system.
    public long MaxSize { get; init; } = 2L << 30;
}

public sealed record AuthSection
{
    // user:hash lines ($6$ SHA-512-crypt, $2y$/$2b$ bcrypt); empty: no local users.
    public string PasswdFile { get; init; } = "";

    // Hand the credentials to the downstream server and let its verdict decide.
    public bool Downstream { get; init; }

    // Offer AUTH on connections without TLS too (passwords then cross the network in clear).
    public bool AllowPlaintext { get; init; }

    public int MaxFailures { get; init; } = 5;
    public TimeSpan FailureWindow { get; init; } = TimeSpan.FromMinutes(15);
    public TimeSpan FailureDelay { get; init; } = TimeSpan.FromSeconds(2);

    public bool Enabled => PasswdFile.Length > 0 || Downstream;
}

public sealed record TlsSection
{
    public const string SnakeoilCertificate = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    public const string SnakeoilKey = "/etc/ssl/private/ssl-cert-snakeoil.key";

    // PEM files; both empty: no STARTTLS and no /tls listeners.
    public string Certificate { get; init; } = "";
    public string Key { get; init; } = "";

    // Neither key was in the file: the built-in default (DebianDefault) decided.
    public bool FromDefault { get; init; }

    public bool Enabled => Certificate.Length > 0;

    // The default when the file sets neither key: Debian's snakeoil pair (package ssl-cert) when
    // this process can read both files, otherwise no TLS, without an error.
    public static TlsSection DebianDefault(string certificate = SnakeoilCertificate, string key = SnakeoilKey) =>
        CanRead(certificate) && CanRead(key)
            ? new TlsSection { Certificate = certificate, Key = key, FromDefault = true }
            : new TlsSection { FromDefault = true };

    private static bool CanRead(string path)
    {
        try
        {
            using var file = File.OpenRead(path);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
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

// One entry of [general] smtp_server_address: an IP address literal (IPv6 without brackets) or a
// host name, and its own port when the entry gave one.
public sealed record MailServerAddress(string Host, int? Port);
