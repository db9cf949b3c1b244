using System.Runtime.CompilerServices;
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Notifications;
using Portcullis.Appliance.Policy;
using Portcullis.Appliance.Quarantine;
using Portcullis.Appliance.Scanning;
using Portcullis.Appliance.Status;
using Portcullis.NativeScan;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

// What every session shares: configuration, the scanner (engine and scanner pool), the way to
// the downstream, the log, the relay policy, the counters, and what the downstream last told
// us about itself. A configuration reload makes a new context (WithConfig) that shares
// everything but the configuration; each session keeps the context it started with.
internal sealed class GatewayContext
{
    private static long s_sessionCounter = Random.Shared.NextInt64(1, 1L << 40);

    private StrongBox<DownstreamCapabilities?> _downstreamCapabilities = new(null);

    private readonly PooledScanner? _pooled;

    public GatewayContext(GatewayConfig config, EngineHolder engines, ScannerPool scanners, MessageLog log, IRelayPolicy relay)
        : this(config, new PooledScanner(engines, scanners, ProductVersion), log, relay)
    {
    }

    // scanner: PooledScanner in the product; a test's own verdicts otherwise (no engine, no pool).
    public GatewayContext(GatewayConfig config, IMessageScanner scanner, MessageLog log, IRelayPolicy relay)
    {
        Config = config;
        Scanner = scanner;
        _pooled = scanner as PooledScanner;
        Log = log;
        Relay = relay;
        ServerOptions = new SmtpServerOptions
        {
            HostName = config.General.Hostname,
            Greeting = "ESMTP Portcullis",
            MaxLineLength = config.Limits.MaxLineLength,
            MaxMessageSize = config.Limits.MaxMessageSize,
            MaxRecipients = config.Limits.MaxRecipients,
            MaxErrors = config.Limits.MaxErrors,
            CommandTimeout = config.Limits.CommandTimeout,
            DataTimeout = config.Limits.DataTimeout,
            BareNewline = config.Limits.BareNewline,
        };
        var (host, port) = config.General.SmtpServers.First();
        DownstreamOptions = DownstreamServer(config.General, host, port,
            [.. config.General.SmtpServers.Skip(1).Select(s => DownstreamServer(config.General, s.Host, s.Port, []))]);
        AuthThrottle = new Auth.AuthThrottle(config.Auth.MaxFailures, config.Auth.FailureWindow);
    }

    // How to reach one of the servers in smtp_server_address (alternatives: the ones after it).
    private static DownstreamOptions DownstreamServer(GeneralSection general, string host, int port, IReadOnlyList<DownstreamOptions> alternatives) =>
        new()
        {
            Host = host,
            Port = port,
            Alternatives = alternatives,
            HeloName = general.Hostname,
            ConnectTimeout = Min(general.SmtpServerTimeout, TimeSpan.FromSeconds(30)),
            ReplyTimeout = general.SmtpServerTimeout,
            DataReplyTimeout = general.SmtpServerTimeout,
            Tls = general.SmtpServerTls switch
            {
                SmtpServerTlsMode.Opportunistic => SmtpCore.Downstream.DownstreamTlsMode.Opportunistic,
                SmtpServerTlsMode.Required => SmtpCore.Downstream.DownstreamTlsMode.Required,
                _ => SmtpCore.Downstream.DownstreamTlsMode.None,
            },
            TlsClientOptions = general.SmtpServerTls == SmtpServerTlsMode.None ? null : TlsCertificates.ClientOptions(general, host),
        };

    // [tls]: null when no certificate is configured (no STARTTLS, no /tls listeners).
    public TlsCertificates? Tls { get; init; }

    // [auth] passwd_file, re-read when it changes; null when not configured.
    public Access.WatchedFile<Auth.PasswdFile>? Passwords { get; init; }

    // The process's, not the configuration's: a reload (every signature update) keeps the counters.
    public Auth.AuthThrottle AuthThrottle { get; private init; }

    public ConnectionLimiter? Connections { get; init; }

    public GatewayConfig Config { get; }
    public IMessageScanner Scanner { get; }
    public EngineHolder Engines => _pooled?.Engines ?? throw new InvalidOperationException(NoPool);
    public ScannerPool Scanners => _pooled?.Pool ?? throw new InvalidOperationException(NoPool);

    // How sessions connect to the downstream (DownstreamOptions says where).
    public IDownstreamConnector Downstream { get; init; } = DownstreamConnector.Instance;

    // The warm downstream connections sessions share (made on first use, with Downstream and
    // DownstreamOptions); shared with a reloaded context unless the server changed.
    public DownstreamPool DownstreamPool
    {
        get => Volatile.Read(ref _pool) ?? CreateDownstreamPool();
        init => _pool = value;
    }

    private DownstreamPool CreateDownstreamPool()
    {
        var made = new DownstreamPool(Downstream, DownstreamOptions, DownstreamTimings, DownstreamLimit(Config));
        return Interlocked.CompareExchange(ref _pool, made, null) ?? made;
    }

    private DownstreamPool? _pool;

    // [general] smtp_server_connections, else as many as the gateway takes clients
    // ([limits] max_connections, where 0 is no limit).
    private static int DownstreamLimit(GatewayConfig config) =>
        config.General.SmtpServerConnections > 0 ? config.General.SmtpServerConnections
        : config.Limits.MaxConnections > 0 ? config.Limits.MaxConnections
        : int.MaxValue;
    public DownstreamTimings DownstreamTimings { get; init; } = DownstreamTimings.Default;
    public MessageLog Log { get; }
    public IRelayPolicy Relay { get; }
    public SmtpServerOptions ServerOptions { get; }
    public DownstreamOptions DownstreamOptions { get; }
    public GatewayMetrics Metrics { get; private init; } = new();

    public QuarantineStore Quarantine => field ??= new QuarantineStore(Config.Quarantine.Folder);

    // Writes quarantine copies off the thread pool; tests gate it.
    public IQuarantineWriter QuarantineWriter { get; init; } = Portcullis.Appliance.Quarantine.QuarantineWriter.Shared;
    public BannedAttachments Banned => field ??= BannedAttachments.From(Config.Scan);
    public TemplateSet? Templates { get; init; }

    // Null: notifications are not sent (no templates or nobody to tell).
    public Notifier? Notifier { get; init; }

    // The store-and-forward queue and its delivery workers; null: nothing can be queued.
    public QueueDelivery? Queue { get; init; }

    // [relay] recipients_file for queued transactions; null when not configured.
    public Access.WatchedFile<Access.RecipientsFile>? KnownRecipients => field ??= Access.RecipientsFile.Watch(Config.Relay);

    // Learned from the newest downstream EHLO; decides whether DSN is offered to clients.
    public DownstreamCapabilities? DownstreamCapabilities
    {
        get => Volatile.Read(ref _downstreamCapabilities.Value);
        set => Volatile.Write(ref _downstreamCapabilities.Value, value);
    }

    // The same gateway with a reloaded configuration.
    // access: relay rules, certificate and password file loaded afresh for `next` (a reload).
    // A changed server (or how it is reached) empties the pool: idle connections are closed now,
    // rented ones when their sessions give them back.
    public GatewayContext WithConfig(GatewayConfig next, GatewayAccess? access = null)
    {
        bool sameServer = SameDownstream(next.General, Config.General);
        if (!sameServer) _ = Volatile.Read(ref _pool)?.CloseAsync();
        return new(next, Scanner, Log, access?.Relay ?? Relay)
        {
            DownstreamPool = sameServer ? DownstreamPool : null!,
            Downstream = Downstream,
            DownstreamTimings = DownstreamTimings,
            Metrics = Metrics,
            AuthThrottle = AuthThrottle.WithLimits(next.Auth.MaxFailures, next.Auth.FailureWindow),
            Templates = Templates,
            Notifier = Notifier,
            Queue = Queue,
            Tls = access is null ? Tls : access.Tls,
            Passwords = access is null ? Passwords : access.Passwords,
            Connections = Connections,
            QuarantineWriter = QuarantineWriter,
            _downstreamCapabilities = sameServer ? _downstreamCapabilities : new StrongBox<DownstreamCapabilities?>(null),
        };
    }

    // Everything a pooled connection was made with (and XCLIENT: a pooled connection told about
    // one client must not carry another's mail once the gateway stops telling).
    private static bool SameDownstream(GeneralSection a, GeneralSection b) =>
        a.SmtpServers.SequenceEqual(b.SmtpServers) && a.Hostname == b.Hostname && a.SmtpServerTls == b.SmtpServerTls
        && a.SmtpServerTlsVerify == b.SmtpServerTlsVerify && a.SmtpServerCaFile == b.SmtpServerCaFile
        && a.SmtpServerTimeout == b.SmtpServerTimeout && a.SmtpServerConnections == b.SmtpServerConnections
        && a.SmtpServerXClient == b.SmtpServerXClient;
    // (A changed [limits] max_connections keeps the pool and its bound until the server changes.)

    public static string ProductVersion => typeof(GatewayContext).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    public string ScannedHeaderValue => Scanner.Description;

    // Short, unique, log-friendly ids like Postfix queue ids.
    public static string NewSessionId()
    {
        long n = Interlocked.Increment(ref s_sessionCounter);
        const string alphabet = "0123456789BCDFGHJKLMNPQRSTVWXYZ";
        Span<char> buffer = stackalloc char[10];
        for (int i = buffer.Length - 1; i >= 0; i--)
        {
            buffer[i] = alphabet[(int)(n % alphabet.Length)];
            n /= alphabet.Length;
        }
        return new string(buffer);
    }

    private const string NoPool = "this gateway context scans without an engine of its own (a test scanner)";

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
