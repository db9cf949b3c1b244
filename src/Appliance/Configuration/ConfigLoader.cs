using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Configuration;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.Appliance.Configuration;

// Reads portcullis.ini into a GatewayConfig. The INI provider splits the file, the binding source
// generator (AOT-safe) copies each section into a Raw* class of strings, and the code here turns
// every string into its typed value. Nothing stops at the first problem: all errors (bad values,
// unknown keys and sections, cross-checks such as a forward loop) are collected and thrown
// together as one ConfigException, each naming file, section, key, value and what was expected.
public static class ConfigLoader
{
    public const string DefaultPath = "/etc/portcullis/portcullis.ini";

    private static readonly string[] SectionNames = ["general", "scan", "limits", "log", "quarantine", "notification", "relay", "auth", "tls", "status", "queue"];

    private static readonly TimeSpan MaxTime = TimeSpan.FromHours(24);

    public static GatewayConfig Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ConfigException($"cannot read {path}: {e.Message}");
        }

        return LoadFromString(text, path);
    }

    public static GatewayConfig LoadFromString(string iniText, string sourceName)
    {
        IConfigurationRoot root;
        try
        {
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(iniText));
            root = new ConfigurationBuilder().AddIniStream(stream).Build();
        }
        catch (FormatException e)
        {
            // Malformed line or duplicate key: the provider stops at the first one.
            throw new ConfigException($"{sourceName}: {e.Message}");
        }

        var errors = new List<string>();
        CheckNames(root, iniText, sourceName, errors);

        var rawGeneral = new RawGeneral();
        root.GetSection("general").Bind(rawGeneral);
        var rawScan = new RawScan();
        root.GetSection("scan").Bind(rawScan);
        var rawLimits = new RawLimits();
        root.GetSection("limits").Bind(rawLimits);
        var rawLog = new RawLog();
        root.GetSection("log").Bind(rawLog);
        var rawQuarantine = new RawQuarantine();
        root.GetSection("quarantine").Bind(rawQuarantine);
        var rawNotification = new RawNotification();
        root.GetSection("notification").Bind(rawNotification);
        var rawRelay = new RawRelay();
        root.GetSection("relay").Bind(rawRelay);
        var rawAuth = new RawAuth();
        root.GetSection("auth").Bind(rawAuth);
        var rawTls = new RawTls();
        root.GetSection("tls").Bind(rawTls);
        var rawStatus = new RawStatus();
        root.GetSection("status").Bind(rawStatus);
        var rawQueue = new RawQueue();
        root.GetSection("queue").Bind(rawQueue);

        var errorsBefore = errors.Count;
        var general = ConvertGeneral(rawGeneral, new SectionReader(sourceName, "general", errors));
        var generalOk = errors.Count == errorsBefore;
        var scan = ConvertScan(rawScan, new SectionReader(sourceName, "scan", errors));
        var limits = ConvertLimits(rawLimits, new SectionReader(sourceName, "limits", errors));
        var log = ConvertLog(rawLog, new SectionReader(sourceName, "log", errors));
        var quarantine = ConvertQuarantine(rawQuarantine, new SectionReader(sourceName, "quarantine", errors));
        var notification = ConvertNotification(rawNotification, new SectionReader(sourceName, "notification", errors));
        var relay = ConvertRelay(rawRelay, new SectionReader(sourceName, "relay", errors));
        var auth = ConvertAuth(rawAuth, new SectionReader(sourceName, "auth", errors));
        var tls = ConvertTls(rawTls, new SectionReader(sourceName, "tls", errors));
        var status = ConvertStatus(rawStatus, new SectionReader(sourceName, "status", errors));
        var queue = ConvertQueue(rawQueue, new SectionReader(sourceName, "queue", errors));

        if (generalOk)
        {
            CheckForwardLoop(general, rawGeneral, sourceName, errors);
        }

        CheckScanCoversMessage(scan, limits, sourceName, errors);
        CheckAccess(general, auth, tls, sourceName, errors);

        if (errors.Count > 0)
        {
            throw new ConfigException(errors);
        }

        return new GatewayConfig
        {
            SourcePath = sourceName, General = general, Scan = scan, Limits = limits, Log = log,
            Quarantine = quarantine, Notification = notification,
            Relay = relay, Auth = auth, Tls = tls, Status = status, Queue = queue,
        };
    }

    // [general] control_socket alone, for `portcullis reload`/`status`: it must work even while
    // the rest of the file has errors (the running gateway keeps its last valid configuration).
    public static string ReadControlSocket(string path)
    {
        var fallback = new GeneralSection().ControlSocket;
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ConfigException($"cannot read {path}: {e.Message}");
        }

        IConfigurationRoot root;
        try
        {
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(text));
            root = new ConfigurationBuilder().AddIniStream(stream).Build();
        }
        catch (FormatException e)
        {
            throw new ConfigException($"{path}: {e.Message}");
        }

        var errors = new List<string>();
        var socket = new SectionReader(path, "general", errors).SocketPath("control_socket", root["general:control_socket"], fallback);
        if (errors.Count > 0)
        {
            throw new ConfigException(errors);
        }

        return socket;
    }

    private static void CheckNames(IConfigurationRoot root, string iniText, string source, List<string> errors)
    {
        var knownSections = string.Join(", ", SectionNames);
        var reported = new HashSet<string>(StringComparer.OrdinalIgnoreCase);

        // The provider records nothing for a section without keys, so headers are looked at here too.
        foreach (var rawLine in iniText.AsSpan().EnumerateLines())
        {
            var line = rawLine.Trim();
            if (line.Length >= 2 && line[0] == '[' && line[^1] == ']')
            {
                var name = line[1..^1].Trim().ToString();
                if (!SectionNames.Contains(name, StringComparer.OrdinalIgnoreCase) && reported.Add(name))
                {
                    errors.Add($"{source}: unknown section [{name}] (known sections: {knownSections})");
                }
            }
        }

        foreach (var child in root.GetChildren())
        {
            var keys = KnownKeys(child.Key);
            if (keys is null)
            {
                if (child.Value is not null && !child.GetChildren().Any())
                {
                    errors.Add($"{source}: key \"{child.Key}\" is outside any section; expected it below a section header such as [general] (known sections: {knownSections})");
                }
                else if (reported.Add(child.Key))
                {
                    errors.Add($"{source}: unknown section [{child.Key}] (known sections: {knownSections})");
                }

                continue;
            }

            if (child.Value is not null)
            {
                errors.Add($"{source}: key \"{child.Key}\" is outside any section and has the name of a section; expected keys below a [{child.Key.ToLowerInvariant()}] header");
            }

            var section = child.Key.ToLowerInvariant();
            foreach (var (key, _) in child.AsEnumerable(makePathsRelative: true).Where(p => p.Value is not null))
            {
                if (!keys.Contains(key, StringComparer.OrdinalIgnoreCase))
                {
                    errors.Add($"{source}: [{section}] unknown key \"{key}\" (known keys: {string.Join(", ", keys)})");
                }
            }
        }
    }

    private static string[]? KnownKeys(string section) => section.ToLowerInvariant() switch
    {
        "general" => RawGeneral.Keys,
        "scan" => RawScan.Keys,
        "limits" => RawLimits.Keys,
        "log" => RawLog.Keys,
        "quarantine" => RawQuarantine.Keys,
        "notification" => RawNotification.Keys,
        "relay" => RawRelay.Keys,
        "auth" => RawAuth.Keys,
        "tls" => RawTls.Keys,
        "status" => RawStatus.Keys,
        "queue" => RawQueue.Keys,
        _ => null,
    };

    private static GeneralSection ConvertGeneral(RawGeneral raw, SectionReader r)
    {
        var d = new GeneralSection();
        var servers = r.MailServers("smtp_server_address", raw.SmtpServerAddress);
        int port = r.Port("smtp_server_port", raw.SmtpServerPort, d.SmtpServerPort);
        // Ports resolved here, so SmtpServerAddress and SmtpServerPort name the first server for every older use.
        var resolved = servers.Select(s => s with { Port = s.Port ?? port }).ToList();
        return new GeneralSection
        {
            Interfaces = r.Interfaces("interfaces", raw.Interfaces, d.Interfaces),
            Hostname = r.HostName("hostname", raw.Hostname, d.Hostname),
            SmtpServerAddress = servers.Count > 0 ? servers[0].Host : d.SmtpServerAddress,
            // One server without a port of its own is SmtpServerAddress and SmtpServerPort, as before lists.
            SmtpServerAddresses = servers is [] or [{ Port: null }] ? d.SmtpServerAddresses : resolved,
            SmtpServerConnections = (int)r.Integer("smtp_server_connections", raw.SmtpServerConnections, d.SmtpServerConnections, 0, 100_000, " (0 for as many as [limits] max_connections)"),
            SmtpServerPort = resolved.Count > 0 ? resolved[0].Port!.Value : port,
            SmtpServerTimeout = r.Time("smtp_server_timeout", raw.SmtpServerTimeout, d.SmtpServerTimeout),
            TempFolder = r.Folder("temp_folder", raw.TempFolder, d.TempFolder, allowEmpty: false),
            QueueFolder = r.Folder("queue_folder", raw.QueueFolder, d.QueueFolder, allowEmpty: false),
            ProxyTrusted = r.Networks("proxy_trusted", raw.ProxyTrusted, d.ProxyTrusted),
            SmtpServerTls = r.Choice("smtp_server_tls", raw.SmtpServerTls, d.SmtpServerTls,
                ("none", SmtpServerTlsMode.None), ("opportunistic", SmtpServerTlsMode.Opportunistic), ("required", SmtpServerTlsMode.Required)),
            SmtpServerTlsVerify = r.Bool("smtp_server_tls_verify", raw.SmtpServerTlsVerify, d.SmtpServerTlsVerify),
            SmtpServerCaFile = r.FilePath("smtp_server_ca_file", raw.SmtpServerCaFile, "/etc/portcullis/downstream-ca.pem"),
            ShutdownTimeout = r.Time("shutdown_timeout", raw.ShutdownTimeout, d.ShutdownTimeout),
            ControlSocket = r.SocketPath("control_socket", raw.ControlSocket, d.ControlSocket),
            SmtpServerXClient = r.Choice("smtp_server_xclient", raw.SmtpServerXClient, d.SmtpServerXClient, ("auto", true), ("no", false)),
        };
    }

    private static ScanSection ConvertScan(RawScan raw, SectionReader r)
    {
        var d = new ScanSection();
        return new ScanSection
        {
            DatabaseFolder = r.Folder("database_folder", raw.DatabaseFolder, d.DatabaseFolder, allowEmpty: false),
            Timeout = r.Time("timeout", raw.Timeout, d.Timeout),
            OnError = r.Choice("on_error", raw.OnError, d.OnError, ("tempfail", ScanErrorAction.Tempfail), ("pass", ScanErrorAction.Pass)),
            ScannerThreads = raw.ScannerThreads is null || raw.ScannerThreads.Trim() is "" or "auto"
                ? d.ScannerThreads
                : (int)r.Integer("scanner_threads", raw.ScannerThreads, d.ScannerThreads, 1, 256, " (or empty or auto for one per CPU)"),
            QueueLength = (int)r.Integer("queue_length", raw.QueueLength, d.QueueLength, 0, 100_000),
            MaxScanSize = r.Size("max_scan_size", raw.MaxScanSize, d.MaxScanSize, 0, " (0 for no limit)"),
            MaxFileSize = r.Size("max_file_size", raw.MaxFileSize, d.MaxFileSize, 0, " (0 for no limit)"),
            MaxRecursion = (int)r.Integer("max_recursion", raw.MaxRecursion, d.MaxRecursion, 0, 1000, " (0 for no limit)"),
            MaxFiles = (int)r.Integer("max_files", raw.MaxFiles, d.MaxFiles, 0, int.MaxValue, " (0 for no limit)"),
            AlertExceedsMax = r.Bool("alert_exceeds_max", raw.AlertExceedsMax, d.AlertExceedsMax),
            ScratchFolder = r.Folder("scratch_folder", raw.ScratchFolder, d.ScratchFolder, allowEmpty: true),
            Action = r.Action("action", raw.Action) ?? d.Action,
            ActionPua = r.Action("action_pua", raw.ActionPua),
            ActionHeuristics = r.Action("action_heuristics", raw.ActionHeuristics),
            ActionPhishing = r.Action("action_phishing", raw.ActionPhishing),
            ActionUnofficial = r.Action("action_unofficial", raw.ActionUnofficial),
            ActionBanned = r.Action("action_banned", raw.ActionBanned),
            TagSubjectPrefix = r.SubjectPrefix("tag_subject_prefix", raw.TagSubjectPrefix, d.TagSubjectPrefix),
            BannedExtensions = r.Extensions("banned_extensions", raw.BannedExtensions, d.BannedExtensions, out var banDouble),
            BanDoubleExtensions = raw.BannedExtensions is null ? d.BanDoubleExtensions : banDouble,
            BannedContentTypes = r.ContentTypes("banned_content_types", raw.BannedContentTypes, d.BannedContentTypes),
            EncryptedArchives = r.Choice("encrypted_archives", raw.EncryptedArchives, d.EncryptedArchives,
                ("allow", EncryptedArchivePolicy.Allow), ("block", EncryptedArchivePolicy.Block)),
            BannedTypes = r.FileTypes("banned_types", raw.BannedTypes, d.BannedTypes),
            ReloadCheckInterval = r.Time("reload_check_interval", raw.ReloadCheckInterval, d.ReloadCheckInterval, allowZero: true),
            ReloadMemory = r.Choice("reload_memory", raw.ReloadMemory, d.ReloadMemory, ("concurrent", ReloadMemory.Concurrent), ("low", ReloadMemory.Low)),
            MaxDefinitionsAge = r.Time("max_definitions_age", raw.MaxDefinitionsAge, d.MaxDefinitionsAge, max: TimeSpan.FromDays(365)),
        };
    }

    private static LimitsSection ConvertLimits(RawLimits raw, SectionReader r)
    {
        var d = new LimitsSection();
        return new LimitsSection
        {
            MaxMessageSize = r.Size("max_message_size", raw.MaxMessageSize, d.MaxMessageSize, 1),
            MaxRecipients = (int)r.Integer("max_recipients", raw.MaxRecipients, d.MaxRecipients, 1, 1_000_000),
            MaxLineLength = (int)r.Integer("max_line_length", raw.MaxLineLength, d.MaxLineLength, 512, 1 << 20),
            MaxErrors = (int)r.Integer("max_errors", raw.MaxErrors, d.MaxErrors, 1, 1_000_000),
            CommandTimeout = r.Time("command_timeout", raw.CommandTimeout, d.CommandTimeout),
            DataTimeout = r.Time("data_timeout", raw.DataTimeout, d.DataTimeout),
            MemoryThreshold = r.Size("memory_threshold", raw.MemoryThreshold, d.MemoryThreshold, 0),
            StreamThreshold = r.Size("stream_threshold", raw.StreamThreshold, d.StreamThreshold, 0, " (0: never)"),
            BareNewline = r.Choice("bare_newline", raw.BareNewline, d.BareNewline, ("normalize", BareNewlinePolicy.Normalize), ("reject", BareNewlinePolicy.Reject)),
            MaxConnections = (int)r.Integer("max_connections", raw.MaxConnections, d.MaxConnections, 0, 1_000_000, " (0 for no limit)"),
            MaxConnectionsPerIp = (int)r.Integer("max_connections_per_ip", raw.MaxConnectionsPerIp, d.MaxConnectionsPerIp, 0, 1_000_000, " (0 for no limit)"),
            MemoryBudget = raw.MemoryBudget is null || raw.MemoryBudget.Trim() is "" or "auto"
                ? d.MemoryBudget
                : r.Size("memory_budget", raw.MemoryBudget, 0, 0, " (0 for no limit; empty or auto for 1/8 of the memory)"),
        };
    }

    private static RelaySection ConvertRelay(RawRelay raw, SectionReader r)
    {
        var d = new RelaySection();
        return new RelaySection
        {
            LocalDomains = r.Domains("local_domains", raw.LocalDomains),
            LocalDomainsFile = r.FilePath("local_domains_file", raw.LocalDomainsFile, "/etc/portcullis/local_domains"),
            TrustedNetworks = r.Networks("trusted_networks", raw.TrustedNetworks, d.TrustedNetworks),
            RulesFile = r.FilePath("rules_file", raw.RulesFile, "/etc/tcp.smtp.cdb"),
            PopBeforeSmtpFile = r.FilePath("pop_before_smtp_file", raw.PopBeforeSmtpFile, "/var/lib/portcullis/pop-before-smtp"),
            PopBeforeSmtpTtl = r.Time("pop_before_smtp_ttl", raw.PopBeforeSmtpTtl, d.PopBeforeSmtpTtl),
            RecipientsFile = r.FilePath("recipients_file", raw.RecipientsFile, "/etc/portcullis/recipients"),
        };
    }

    private static QueueSection ConvertQueue(RawQueue raw, SectionReader r)
    {
        var d = new QueueSection();
        var queue = new QueueSection
        {
            Mode = r.Choice("mode", raw.Mode, d.Mode, ("off", QueueMode.Off), ("fallback", QueueMode.Fallback), ("always", QueueMode.Always)),
            Concurrency = (int)r.Integer("concurrency", raw.Concurrency, d.Concurrency, 1, 64),
            MinBackoff = r.Time("min_backoff", raw.MinBackoff, d.MinBackoff),
            MaxBackoff = r.Time("max_backoff", raw.MaxBackoff, d.MaxBackoff),
            MaxLifetime = r.Time("max_lifetime", raw.MaxLifetime, d.MaxLifetime, max: TimeSpan.FromDays(30)),
            DelayWarning = r.Time("delay_warning", raw.DelayWarning, d.DelayWarning, allowZero: true, max: TimeSpan.FromDays(30)),
            MaxSize = r.Size("max_size", raw.MaxSize, d.MaxSize, 1),
        };
        if (raw.MaxBackoff is not null && queue.MaxBackoff < queue.MinBackoff)
            r.Error("max_backoff", raw.MaxBackoff, $"a time at least min_backoff ({ConfigValues.FormatTime(queue.MinBackoff)})");
        return queue;
    }

    private static AuthSection ConvertAuth(RawAuth raw, SectionReader r)
    {
        var d = new AuthSection();
        return new AuthSection
        {
            PasswdFile = r.FilePath("passwd_file", raw.PasswdFile, "/etc/portcullis/passwd"),
            Downstream = r.Bool("downstream", raw.Downstream, d.Downstream),
            AllowPlaintext = r.Bool("allow_plaintext", raw.AllowPlaintext, d.AllowPlaintext),
            MaxFailures = (int)r.Integer("max_failures", raw.MaxFailures, d.MaxFailures, 1, 1_000_000),
            FailureWindow = r.Time("failure_window", raw.FailureWindow, d.FailureWindow),
            FailureDelay = r.ShortTime("failure_delay", raw.FailureDelay, d.FailureDelay, TimeSpan.FromSeconds(60)),
        };
    }

    // Neither key, or exactly Debian's snakeoil pair: that pair when readable, else no TLS (no error).
    private static TlsSection ConvertTls(RawTls raw, SectionReader r) =>
        (raw.Certificate is null && raw.Key is null) || (raw.Certificate?.Trim() == TlsSection.SnakeoilCertificate && raw.Key?.Trim() == TlsSection.SnakeoilKey)
        ? TlsSection.DebianDefault() : new()
    {
        Certificate = r.FilePath("certificate", raw.Certificate, "/etc/portcullis/tls/cert.pem"),
        Key = r.FilePath("key", raw.Key, "/etc/portcullis/tls/key.pem"),
    };

    // Settings that only make sense together.
    private static void CheckAccess(GeneralSection general, AuthSection auth, TlsSection tls, string source, List<string> errors)
    {
        if ((tls.Certificate.Length > 0) != (tls.Key.Length > 0))
        {
            errors.Add($"{source}: [tls] certificate and key must be set together; expected both PEM files (or neither, for no TLS)");
        }

        if (auth.PasswdFile.Length > 0 && auth.Downstream)
        {
            errors.Add($"{source}: [auth] passwd_file and downstream = yes are both set; expected one way to check passwords");
        }

        if (auth.Enabled && !auth.AllowPlaintext && !tls.Enabled)
        {
            errors.Add($"{source}: [auth] is enabled but AUTH is offered only after TLS and [tls] has no certificate; expected [tls] certificate and key, or [auth] allow_plaintext = yes");
        }
    }

    private static LogSection ConvertLog(RawLog raw, SectionReader r) =>
        new() { Folder = r.Folder("folder", raw.Folder, "", allowEmpty: true) };

    private static QuarantineSection ConvertQuarantine(RawQuarantine raw, SectionReader r)
    {
        var d = new QuarantineSection();
        return new QuarantineSection
        {
            Folder = r.Folder("folder", raw.Folder, d.Folder, allowEmpty: false),
            Copy = r.Bool("copy", raw.Copy, d.Copy),
            RetentionDays = (int)r.Integer("retention_days", raw.RetentionDays, d.RetentionDays, 0, 36500, " (0 keeps entries for ever)"),
        };
    }

    private static NotificationSection ConvertNotification(RawNotification raw, SectionReader r)
    {
        var d = new NotificationSection();
        var address = raw.SmtpServerAddress is null || raw.SmtpServerAddress.Trim().Length == 0
            ? d.SmtpServerAddress
            : r.ServerAddress("smtp_server_address", raw.SmtpServerAddress, d.SmtpServerAddress);
        int? port = raw.SmtpServerPort is null || raw.SmtpServerPort.Trim().Length == 0
            ? d.SmtpServerPort
            : r.Port("smtp_server_port", raw.SmtpServerPort, 25);
        return new NotificationSection
        {
            SmtpServerAddress = address,
            SmtpServerPort = port,
            Sender = r.MailAddress("sender", raw.Sender, d.Sender, allowEmpty: true),
            NotifyList = r.MailAddresses("notify_list", raw.NotifyList, d.NotifyList),
            NotifyRecipients = r.Bool("notify_recipients", raw.NotifyRecipients, d.NotifyRecipients),
            NotifySender = r.Bool("notify_sender", raw.NotifySender, d.NotifySender),
            TemplateFolder = r.Folder("template_folder", raw.TemplateFolder, d.TemplateFolder, allowEmpty: false),
        };
    }
    private static StatusSection ConvertStatus(RawStatus raw, SectionReader r) =>
        new() { Listen = r.OptionalEndPoint("listen", raw.Listen, new StatusSection().Listen) };

    // libclamav treats the whole message as one file: a message larger than max_file_size or
    // max_scan_size would be passed as clean without being scanned to the end.
    private static void CheckScanCoversMessage(ScanSection scan, LimitsSection limits, string source, List<string> errors)
    {
        foreach (var (key, value) in new[] { ("max_file_size", scan.MaxFileSize), ("max_scan_size", scan.MaxScanSize) })
        {
            if (value != 0 && limits.MaxMessageSize > value)
            {
                errors.Add($"{source}: [scan] {key} = {ConfigValues.FormatSize(value)} is smaller than [limits] max_message_size = {ConfigValues.FormatSize(limits.MaxMessageSize)}: larger messages would pass unscanned; expected {key} of at least max_message_size (or 0 for no limit)");
            }
        }
    }

    // Forwarding to one of our own listeners would hand every message back to ourselves.
    private static void CheckForwardLoop(GeneralSection general, RawGeneral raw, string source, List<string> errors)
    {
        var loop = general.SmtpServers
            .Select(s => FindForwardLoop(general with { SmtpServerAddress = s.Host, SmtpServerPort = s.Port }, LocalAddresses.Value))
            .FirstOrDefault(l => l is not null);
        if (loop is null)
        {
            return;
        }

        var address = raw.SmtpServerAddress is null ? "127.0.0.1 (default)" : Quote(raw.SmtpServerAddress);
        var port = raw.SmtpServerPort is null ? "2525 (default)" : Quote(raw.SmtpServerPort);
        errors.Add($"{source}: [general] smtp_server_address = {address}, smtp_server_port = {port}: this is the gateway's own listener {loop}, so mail would loop; expected the address and port of the real mail server behind the gateway (such as 127.0.0.1:2525)");
    }

    internal static ListenEndpoint? FindForwardLoop(GeneralSection general, IReadOnlySet<IPAddress> localAddresses)
    {
        List<IPAddress> targets = [];
        var name = general.SmtpServerAddress;
        var targetIsThisHost = false;
        if (ConfigValues.TryParseIPAddress(name, out var ip))
        {
            targets.Add(ip!.IsIPv4MappedToIPv6 ? ip.MapToIPv4() : ip);
        }
        else if (name.Equals("localhost", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase))
        {
            targets.Add(IPAddress.Loopback);
            targets.Add(IPAddress.IPv6Loopback);
        }
        else if (name.TrimEnd('.').Equals(general.Hostname.TrimEnd('.'), StringComparison.OrdinalIgnoreCase))
        {
            targetIsThisHost = true;
        }

        foreach (var listener in general.Interfaces)
        {
            if (listener.EndPoint.Port != general.SmtpServerPort)
            {
                continue;
            }

            var bound = listener.EndPoint.Address;
            var wildcard4 = bound.Equals(IPAddress.Any);
            var wildcard6 = bound.Equals(IPAddress.IPv6Any);
            if (targetIsThisHost && (wildcard4 || wildcard6))
            {
                return listener;
            }

            foreach (var target in targets)
            {
                var local = IPAddress.IsLoopback(target) || target.Equals(IPAddress.Any) || target.Equals(IPAddress.IPv6Any) || localAddresses.Contains(target);
                if (bound.Equals(target)
                    || (wildcard4 && local && target.AddressFamily == AddressFamily.InterNetwork)
                    || (wildcard6 && local))
                {
                    return listener;
                }
            }
        }

        return null;
    }

    private static readonly Lazy<IReadOnlySet<IPAddress>> LocalAddresses = new(() =>
    {
        var set = new HashSet<IPAddress>();
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
            {
                foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
                {
                    set.Add(unicast.Address);
                }
            }
        }
        catch (Exception e) when (e is NetworkInformationException or PlatformNotSupportedException or IOException)
        {
            // Without the interface list only loopback and wildcard targets are recognised as local.
        }

        return set;
    });

    internal static string Quote(string value)
    {
        var builder = new StringBuilder(value.Length + 2).Append('"');
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': builder.Append("\\\""); break;
                case '\\': builder.Append("\\\\"); break;
                case < ' ' or '\x7f': builder.Append($"\\x{(int)c:X2}"); break;
                default: builder.Append(c); break;
            }
        }

        return builder.Append('"').ToString();
    }

    // Converts the values of one section, adding an error for each bad one and returning the default instead.
    private sealed class SectionReader(string source, string section, List<string> errors)
    {
        private const string SizeSyntax = "a size such as 512K, 50M or 1G";
        private const string TimeSyntax = "a time such as 30s, 5m or 1h";
        private const string LongTimeSyntax = "a time such as 30s, 5m, 1h or 3d";

        public void Error(string key, string value, string expected) =>
            errors.Add($"{source}: [{section}] {key} = {Quote(value)}: expected {expected}");

        public long Size(string key, string? raw, long fallback, long min, string note = "")
        {
            if (raw is null) return fallback;
            if (ConfigValues.TryParseSize(raw, out var value) && value >= min) return value;
            Error(key, raw, SizeSyntax + (min > 0 ? (min == 1 ? ", greater than 0" : $", at least {ConfigValues.FormatSize(min)}") : "") + note);
            return fallback;
        }

        // A delay that may be zero: 0 to max.
        public TimeSpan ShortTime(string key, string? raw, TimeSpan fallback, TimeSpan max)
        {
            if (raw is null) return fallback;
            if (ConfigValues.TryParseTime(raw, out var value) && value <= max) return value;
            Error(key, raw, $"{TimeSyntax} (a bare number is seconds), from 0s to {ConfigValues.FormatTime(max)}");
            return fallback;
        }

        public NetworkList Networks(string key, string? raw, NetworkList fallback)
        {
            if (raw is null) return fallback;
            if (NetworkList.TryParse(raw, out var list, out var problem)) return list;
            Error(key, raw, $"a list of addresses or CIDR networks such as 127.0.0.0/8, 192.168.1.0/24, ::1/128 ({problem}; host bits below the prefix length must be 0)");
            return fallback;
        }

        // Domains for [relay] local_domains: "example.org" exactly, ".example.org" its subdomains.
        public ValueList<string> Domains(string key, string? raw)
        {
            if (raw is null) return ValueList<string>.Empty;
            var result = new List<string>();
            foreach (var entry in ConfigValues.SplitList(raw))
            {
                var name = Access.MailDomain.Normalize(entry);
                if (!ConfigValues.IsHostName(name.TrimStart('.')))
                {
                    Error(key, raw, $"a list of domain names such as example.org, .example.org for its subdomains (entry {Quote(entry)} is not a domain name)");
                    return ValueList<string>.Empty;
                }
                result.Add(name);
            }
            return new ValueList<string>(result);
        }

        // An absolute file path, or empty for "not used".
        public string FilePath(string key, string? raw, string example)
        {
            if (raw is null) return "";
            var path = raw.Trim();
            if (path.Length == 0) return "";
            if (path.StartsWith('/') && !path.EndsWith('/') && !path.Any(char.IsControl)) return path;
            Error(key, raw, $"an absolute file path such as {example} (or empty)");
            return "";
        }

        // allowZero: 0 (or off) switches the thing off and reads as TimeSpan.Zero.
        public TimeSpan Time(string key, string? raw, TimeSpan fallback, bool allowZero = false, TimeSpan? max = null)
        {
            if (raw is null) return fallback;
            var limit = max ?? MaxTime;
            if (allowZero && raw.Trim().ToLowerInvariant() is "0" or "off") return TimeSpan.Zero;
            if (ConfigValues.TryParseTime(raw, out var value) && value >= TimeSpan.FromSeconds(1) && value <= limit) return value;
            Error(key, raw, $"{(limit > MaxTime ? LongTimeSyntax : TimeSyntax)} (a bare number is seconds), from 1s to {ConfigValues.FormatTime(limit)}" + (allowZero ? " (or 0 for never)" : ""));
            return fallback;
        }

        // An absolute path short enough for sockaddr_un (107 bytes and the NUL), or empty for none.
        public string SocketPath(string key, string? raw, string fallback)
        {
            if (raw is null) return fallback;
            var path = raw.Trim();
            if (path.Length == 0) return "";
            if (path.StartsWith('/') && !path.EndsWith('/') && !path.Any(char.IsControl) && Encoding.UTF8.GetByteCount(path) <= 107) return path;
            Error(key, raw, "an absolute path of a socket file, at most 107 bytes, such as " + fallback + " (or empty for none)");
            return fallback;
        }

        // address:port, or empty for none.
        public IPEndPoint? OptionalEndPoint(string key, string? raw, IPEndPoint? fallback)
        {
            if (raw is null) return fallback;
            if (raw.Trim().Length == 0) return null;
            if (ConfigValues.TryParsePlainEndPoint(raw, out var endpoint, out var problem)) return endpoint;
            Error(key, raw, $"an address:port such as 127.0.0.1:9025 or [::1]:9025 ({problem}), or empty for none");
            return fallback;
        }

        public long Integer(string key, string? raw, long fallback, long min, long max, string note = "")
        {
            if (raw is null) return fallback;
            if (ConfigValues.TryParseInteger(raw, out var value) && value >= min && value <= max) return value;
            Error(key, raw, $"a whole number from {min} to {max}{note}");
            return fallback;
        }

        public int Port(string key, string? raw, int fallback)
        {
            if (raw is null) return fallback;
            if (ConfigValues.TryParsePort(raw, out var port)) return port;
            Error(key, raw, "a TCP port number from 1 to 65535");
            return fallback;
        }

        // Absent or empty: null (an action_* key then follows `action`).
        public DetectionAction? Action(string key, string? raw)
        {
            if (raw is null || raw.Trim().Length == 0) return null;
            foreach (var (word, value) in ActionWords)
            {
                if (string.Equals(raw.Trim(), word, StringComparison.OrdinalIgnoreCase)) return value;
            }

            Error(key, raw, "one of reject, discard, strip, tag" + (key == "action" ? "" : " (or empty to follow action)"));
            return null;
        }

        private static readonly (string, DetectionAction)[] ActionWords =
            [("reject", DetectionAction.Reject), ("discard", DetectionAction.Discard), ("strip", DetectionAction.Strip), ("tag", DetectionAction.Tag)];

        // Goes into a Subject header: printable text only, short enough for one header line.
        public string SubjectPrefix(string key, string? raw, string fallback)
        {
            if (raw is null) return fallback;
            if (raw.Length <= 64 && !raw.Any(char.IsControl)) return raw;
            Error(key, raw, "printable text of at most 64 characters, in double quotes to keep a trailing space, such as \"[VIRUS] \"");
            return fallback;
        }

        // File extensions (exe, .exe and *.exe all mean exe) and the word `double`; `none` or empty: no rule.
        public ValueList<string> Extensions(string key, string? raw, ValueList<string> fallback, out bool banDouble)
        {
            banDouble = false;
            if (raw is null) return fallback;
            if (raw.Trim().Equals("none", StringComparison.OrdinalIgnoreCase)) return ValueList<string>.Empty;
            var result = new List<string>();
            var ok = true;
            foreach (var item in ConfigValues.SplitList(raw))
            {
                var word = item.ToLowerInvariant();
                if (word == Policy.BannedAttachments.DoubleWord)
                {
                    banDouble = true;
                    continue;
                }

                var extension = word.StartsWith("*.", StringComparison.Ordinal) ? word[2..] : word.TrimStart('.');
                if (extension.Length is 0 or > 16 || !extension.All(char.IsAsciiLetterOrDigit))
                {
                    ok = false;
                    continue;
                }

                if (!result.Contains(extension)) result.Add(extension);
            }

            if (ok) return new ValueList<string>(result);
            Error(key, raw, "a list of file extensions of letters and digits such as exe, scr, js, plus the word double for names like invoice.pdf.exe (or none)");
            return fallback;
        }

        // libclamav type names (msexe, CL_TYPE_MSEXE); `none` or empty: no rule.
        public ValueList<string> FileTypes(string key, string? raw, ValueList<string> fallback)
        {
            if (raw is null) return fallback;
            if (raw.Trim().Equals("none", StringComparison.OrdinalIgnoreCase)) return ValueList<string>.Empty;
            var result = new List<string>();
            foreach (var item in ConfigValues.SplitList(raw))
            {
                var word = item.ToLowerInvariant();
                if (word.StartsWith("cl_type_", StringComparison.Ordinal)) word = word[8..];
                if (!Policy.BannedAttachments.KnownTypes.Contains(word))
                {
                    Error(key, raw, "a list of libclamav file types such as msexe, elf, macho (CL_TYPE_ names without the prefix), or none");
                    return fallback;
                }

                if (!result.Contains(word)) result.Add(word);
            }

            return new ValueList<string>(result);
        }

        // Media types: type/subtype or type/*; `none` or empty: no rule.
        public ValueList<string> ContentTypes(string key, string? raw, ValueList<string> fallback)
        {
            if (raw is null) return fallback;
            if (raw.Trim().Equals("none", StringComparison.OrdinalIgnoreCase)) return ValueList<string>.Empty;
            var result = new List<string>();
            foreach (var item in ConfigValues.SplitList(raw))
            {
                var slash = item.IndexOf('/');
                if (slash <= 0 || slash == item.Length - 1 || item.IndexOf('/', slash + 1) >= 0 || !item.All(IsTokenChar))
                {
                    Error(key, raw, "a list of media types such as application/x-msdownload or application/* (or none)");
                    return fallback;
                }

                result.Add(item.ToLowerInvariant());
            }

            return new ValueList<string>(result);
        }

        // RFC 2045 token characters, plus '/' and '*'.
        private static bool IsTokenChar(char c) =>
            char.IsAsciiLetterOrDigit(c) || c is '!' or '#' or '$' or '%' or '&' or '\'' or '*' or '+' or '-' or '.' or '^' or '_' or '`' or '|' or '~' or '/';

        public string MailAddress(string key, string? raw, string fallback, bool allowEmpty)
        {
            if (raw is null) return fallback;
            var text = raw.Trim();
            if (text.Length == 0 && allowEmpty) return "";
            if (ConfigValues.IsMailAddress(text)) return text;
            Error(key, raw, "a mail address such as postmaster@example.com" + (allowEmpty ? " (or empty)" : ""));
            return fallback;
        }

        public ValueList<string> MailAddresses(string key, string? raw, ValueList<string> fallback)
        {
            if (raw is null) return fallback;
            var items = ConfigValues.SplitList(raw);
            if (items.All(ConfigValues.IsMailAddress)) return new ValueList<string>(items);
            Error(key, raw, "a list of mail addresses such as admin@example.com, security@example.com (or empty)");
            return fallback;
        }

        public bool Bool(string key, string? raw, bool fallback)
        {
            if (raw is null) return fallback;
            if (ConfigValues.TryParseBool(raw, out var value)) return value;
            Error(key, raw, "yes or no (or true/false, on/off, 1/0)");
            return fallback;
        }

        // AOT-safe enum parsing: the accepted words are listed by the caller.
        public T Choice<T>(string key, string? raw, T fallback, params (string Word, T Value)[] choices)
        {
            if (raw is null) return fallback;
            foreach (var (word, value) in choices)
            {
                if (string.Equals(raw.Trim(), word, StringComparison.OrdinalIgnoreCase)) return value;
            }

            Error(key, raw, "one of " + string.Join(", ", choices.Select(c => c.Word)));
            return fallback;
        }

        public string Folder(string key, string? raw, string fallback, bool allowEmpty)
        {
            if (raw is null) return fallback;
            var path = raw.Trim();
            if (path.Length == 0 && allowEmpty) return "";
            if (path.StartsWith('/') && !path.Any(char.IsControl))
            {
                return path.Length > 1 ? path.TrimEnd('/') : path;
            }

            Error(key, raw, "an absolute folder path such as " + (fallback.Length > 0 ? fallback : "/var/log/portcullis") + (allowEmpty ? " (or empty)" : ""));
            return fallback;
        }

        // Empty means "this machine's name", the default.
        public string HostName(string key, string? raw, string fallback)
        {
            if (raw is null || raw.Trim().Length == 0) return fallback;
            if (ConfigValues.IsHostName(raw.Trim())) return raw.Trim();
            Error(key, raw, "a host name such as mail.example.com (or empty for this machine's name)");
            return fallback;
        }

        public string ServerAddress(string key, string? raw, string fallback)
        {
            if (raw is null) return fallback;
            var text = raw.Trim();
            if (ConfigValues.TryParseIPAddress(text, out var address)) return address!.ToString();
            if (ConfigValues.IsHostName(text)) return text;
            Error(key, raw, "an IP address or a host name such as 127.0.0.1, ::1 or mail.example.com");
            return fallback;
        }

        // A comma-separated list of mail servers tried in order; absent: empty (the default server).
        public IReadOnlyList<MailServerAddress> MailServers(string key, string? raw)
        {
            if (raw is null) return [];
            const string Expected = "an IP address or a host name, or several separated by commas (tried in order), each with an optional :port, such as 127.0.0.1, mx2.example.com:2525, [::1]:25";
            var entries = raw.Split(',', StringSplitOptions.TrimEntries);
            if (raw.Trim().Length == 0)
            {
                Error(key, raw, Expected);
                return [];
            }
            var result = new List<MailServerAddress>();
            foreach (var entry in entries)
            {
                if (!ConfigValues.TryParseMailServer(entry, out var server, out var problem))
                {
                    errors.Add($"{source}: [{section}] {key} = {Quote(raw)}: entry {Quote(entry)}: {problem}; expected {Expected}");
                    return [];
                }
                if (result.Contains(server!))
                {
                    errors.Add($"{source}: [{section}] {key} = {Quote(raw)}: entry {Quote(entry)} is listed twice; expected {Expected}");
                    return [];
                }
                result.Add(server!);
            }
            return result;
        }

        public IReadOnlyList<ListenEndpoint> Interfaces(string key, string? raw, IReadOnlyList<ListenEndpoint> fallback)
        {
            if (raw is null) return fallback;
            const string Expected = "a list of address:port entries, each optionally followed by /tls or /proxy, such as 0.0.0.0:25, [::]:25, 0.0.0.0:465/tls";
            var entries = ConfigValues.SplitList(raw);
            if (entries.Length == 0)
            {
                Error(key, raw, Expected);
                return fallback;
            }

            var result = new List<ListenEndpoint>();
            var ok = true;
            foreach (var entry in entries)
            {
                if (!ConfigValues.TryParseListenEndpoint(entry, out var endpoint, out var problem))
                {
                    errors.Add($"{source}: [{section}] {key} = {Quote(raw)}: entry {Quote(entry)}: {problem}; expected {Expected}");
                    ok = false;
                }
                else if (result.Any(e => e.EndPoint.Equals(endpoint!.EndPoint)))
                {
                    errors.Add($"{source}: [{section}] {key} = {Quote(raw)}: {endpoint!.EndPoint} is listed twice; expected each address:port once");
                    ok = false;
                }
                else
                {
                    result.Add(endpoint!);
                }
            }

            return ok ? result : fallback;
        }
    }
}
