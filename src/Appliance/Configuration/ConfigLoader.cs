using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Configuration;

namespace Portcullis.Appliance.Configuration;

// Reads portcullis.ini into a GatewayConfig. The INI provider splits the file, the binding source
// generator (AOT-safe) copies each section into a Raw* class of strings, and the code here turns
// every string into its typed value. Nothing stops at the first problem: all errors (bad values,
// unknown keys and sections, cross-checks such as a forward loop) are collected and thrown
// together as one ConfigException, each naming file, section, key, value and what was expected.
public static class ConfigLoader
{
    public const string DefaultPath = "/etc/portcullis/portcullis.ini";

    private static readonly string[] SectionNames = ["general", "scan", "limits", "log", "quarantine", "notification"];

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

        var errorsBefore = errors.Count;
        var general = ConvertGeneral(rawGeneral, new SectionReader(sourceName, "general", errors));
        var generalOk = errors.Count == errorsBefore;
        var scan = ConvertScan(rawScan, new SectionReader(sourceName, "scan", errors));
        var limits = ConvertLimits(rawLimits, new SectionReader(sourceName, "limits", errors));
        var log = ConvertLog(rawLog, new SectionReader(sourceName, "log", errors));
        var quarantine = ConvertQuarantine(rawQuarantine, new SectionReader(sourceName, "quarantine", errors));
        var notification = ConvertNotification(rawNotification, new SectionReader(sourceName, "notification", errors));

        if (generalOk)
        {
            CheckForwardLoop(general, rawGeneral, sourceName, errors);
        }

        CheckScanCoversMessage(scan, limits, sourceName, errors);

        if (errors.Count > 0)
        {
            throw new ConfigException(errors);
        }

        return new GatewayConfig
        {
            SourcePath = sourceName, General = general, Scan = scan, Limits = limits, Log = log,
            Quarantine = quarantine, Notification = notification,
        };
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
        _ => null,
    };

    private static GeneralSection ConvertGeneral(RawGeneral raw, SectionReader r)
    {
        var d = new GeneralSection();
        return new GeneralSection
        {
            Interfaces = r.Interfaces("interfaces", raw.Interfaces, d.Interfaces),
            Hostname = r.HostName("hostname", raw.Hostname, d.Hostname),
            SmtpServerAddress = r.ServerAddress("smtp_server_address", raw.SmtpServerAddress, d.SmtpServerAddress),
            SmtpServerPort = r.Port("smtp_server_port", raw.SmtpServerPort, d.SmtpServerPort),
            SmtpServerTimeout = r.Time("smtp_server_timeout", raw.SmtpServerTimeout, d.SmtpServerTimeout),
            TempFolder = r.Folder("temp_folder", raw.TempFolder, d.TempFolder, allowEmpty: false),
            QueueFolder = r.Folder("queue_folder", raw.QueueFolder, d.QueueFolder, allowEmpty: false),
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
            BareNewline = r.Choice("bare_newline", raw.BareNewline, d.BareNewline, ("normalize", BareNewlinePolicy.Normalize), ("reject", BareNewlinePolicy.Reject)),
        };
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
        var loop = FindForwardLoop(general, LocalAddresses.Value);
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

        public void Error(string key, string value, string expected) =>
            errors.Add($"{source}: [{section}] {key} = {Quote(value)}: expected {expected}");

        public long Size(string key, string? raw, long fallback, long min, string note = "")
        {
            if (raw is null) return fallback;
            if (ConfigValues.TryParseSize(raw, out var value) && value >= min) return value;
            Error(key, raw, SizeSyntax + (min > 0 ? (min == 1 ? ", greater than 0" : $", at least {ConfigValues.FormatSize(min)}") : "") + note);
            return fallback;
        }

        public TimeSpan Time(string key, string? raw, TimeSpan fallback)
        {
            if (raw is null) return fallback;
            if (ConfigValues.TryParseTime(raw, out var value) && value >= TimeSpan.FromSeconds(1) && value <= MaxTime) return value;
            Error(key, raw, $"{TimeSyntax} (a bare number is seconds), from 1s to 24h");
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
