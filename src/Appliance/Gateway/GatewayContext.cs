using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Notifications;
using Portcullis.Appliance.Policy;
using Portcullis.Appliance.Quarantine;
using Portcullis.NativeScan;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

// What every session shares: configuration, the engine and scanner pool, the log, the
// relay policy, and what the downstream last told us about itself.
internal sealed class GatewayContext
{
    private static long s_sessionCounter = Random.Shared.NextInt64(1, 1L << 40);

    public GatewayContext(GatewayConfig config, EngineHolder engines, ScannerPool scanners, MessageLog log, IRelayPolicy relay)
    {
        Config = config;
        Engines = engines;
        Scanners = scanners;
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
            BareNewline = config.Limits.BareNewline == BareNewlinePolicy.Reject
                ? SmtpCore.Protocol.BareNewlinePolicy.Reject
                : SmtpCore.Protocol.BareNewlinePolicy.Normalize,
        };
        DownstreamOptions = new DownstreamOptions
        {
            Host = config.General.SmtpServerAddress,
            Port = config.General.SmtpServerPort,
            HeloName = config.General.Hostname,
            ConnectTimeout = Min(config.General.SmtpServerTimeout, TimeSpan.FromSeconds(30)),
            ReplyTimeout = config.General.SmtpServerTimeout,
            DataReplyTimeout = config.General.SmtpServerTimeout,
        };
    }

    public GatewayConfig Config { get; }
    public EngineHolder Engines { get; }
    public ScannerPool Scanners { get; }
    public MessageLog Log { get; }
    public IRelayPolicy Relay { get; }
    public SmtpServerOptions ServerOptions { get; }
    public DownstreamOptions DownstreamOptions { get; }

    public QuarantineStore Quarantine => field ??= new QuarantineStore(Config.Quarantine.Folder);
    public BannedAttachments Banned => field ??= BannedAttachments.From(Config.Scan);
    public TemplateSet? Templates { get; init; }

    // Null: notifications are not sent (no templates or nobody to tell).
    public Notifier? Notifier { get; init; }

    // Learned from the newest downstream EHLO; decides whether DSN is offered to clients.
    public DownstreamCapabilities? DownstreamCapabilities { get; set; }

    public static string ProductVersion => typeof(GatewayContext).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    public string ScannedHeaderValue
    {
        get
        {
            var engine = Engines.Current;
            return $"portcullis {ProductVersion}, ClamAV {ClamAV.Version}/{engine.SignatureCount}";
        }
    }

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

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
