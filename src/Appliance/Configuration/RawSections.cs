using Microsoft.Extensions.Configuration;

namespace Portcullis.Appliance.Configuration;

// What the configuration binding source generator fills in: each INI section as plain strings
// (null = key absent). All conversion and validation happens in ConfigLoader so that every bad
// value can be reported with its file, section and key. `Keys` lists the canonical key names.
internal sealed class RawGeneral
{
    public static readonly string[] Keys =
        [
            "interfaces", "hostname", "smtp_server_address", "smtp_server_port", "smtp_server_timeout", "temp_folder", "queue_folder",
            "proxy_trusted", "smtp_server_tls", "smtp_server_tls_verify", "smtp_server_ca_file", "shutdown_timeout", "control_socket",
            "smtp_server_xclient",
            "smtp_server_connections",
        ];

    [ConfigurationKeyName("interfaces")] public string? Interfaces { get; set; }
    [ConfigurationKeyName("hostname")] public string? Hostname { get; set; }
    [ConfigurationKeyName("smtp_server_address")] public string? SmtpServerAddress { get; set; }
    [ConfigurationKeyName("smtp_server_port")] public string? SmtpServerPort { get; set; }
    [ConfigurationKeyName("smtp_server_timeout")] public string? SmtpServerTimeout { get; set; }
    [ConfigurationKeyName("temp_folder")] public string? TempFolder { get; set; }
    [ConfigurationKeyName("queue_folder")] public string? QueueFolder { get; set; }
    [ConfigurationKeyName("proxy_trusted")] public string? ProxyTrusted { get; set; }
    [ConfigurationKeyName("smtp_server_tls")] public string? SmtpServerTls { get; set; }
    [ConfigurationKeyName("smtp_server_tls_verify")] public string? SmtpServerTlsVerify { get; set; }
    [ConfigurationKeyName("smtp_server_ca_file")] public string? SmtpServerCaFile { get; set; }
    [ConfigurationKeyName("shutdown_timeout")] public string? ShutdownTimeout { get; set; }
    [ConfigurationKeyName("control_socket")] public string? ControlSocket { get; set; }
    [ConfigurationKeyName("smtp_server_xclient")] public string? SmtpServerXClient { get; set; }
    [ConfigurationKeyName("smtp_server_connections")] public string? SmtpServerConnections { get; set; }
}

internal sealed class RawScan
{
    public static readonly string[] Keys =
    [
        "database_folder", "timeout", "on_error", "scanner_threads", "queue_length", "max_scan_size",
        "max_file_size", "max_recursion", "max_files", "alert_exceeds_max", "scratch_folder", "action", "action_pua",
        "action_heuristics", "action_phishing", "action_unofficial", "action_banned", "tag_subject_prefix",
        "banned_extensions", "banned_content_types", "encrypted_archives", "banned_types", "reload_check_interval",
        "reload_memory", "max_definitions_age",
    ];

    [ConfigurationKeyName("database_folder")] public string? DatabaseFolder { get; set; }
    [ConfigurationKeyName("timeout")] public string? Timeout { get; set; }
    [ConfigurationKeyName("on_error")] public string? OnError { get; set; }
    [ConfigurationKeyName("scanner_threads")] public string? ScannerThreads { get; set; }
    [ConfigurationKeyName("queue_length")] public string? QueueLength { get; set; }
    [ConfigurationKeyName("max_scan_size")] public string? MaxScanSize { get; set; }
    [ConfigurationKeyName("max_file_size")] public string? MaxFileSize { get; set; }
    [ConfigurationKeyName("max_recursion")] public string? MaxRecursion { get; set; }
    [ConfigurationKeyName("max_files")] public string? MaxFiles { get; set; }
    [ConfigurationKeyName("alert_exceeds_max")] public string? AlertExceedsMax { get; set; }
    [ConfigurationKeyName("scratch_folder")] public string? ScratchFolder { get; set; }
    [ConfigurationKeyName("action")] public string? Action { get; set; }
    [ConfigurationKeyName("action_pua")] public string? ActionPua { get; set; }
    [ConfigurationKeyName("action_heuristics")] public string? ActionHeuristics { get; set; }
    [ConfigurationKeyName("action_phishing")] public string? ActionPhishing { get; set; }
    [ConfigurationKeyName("action_unofficial")] public string? ActionUnofficial { get; set; }
    [ConfigurationKeyName("action_banned")] public string? ActionBanned { get; set; }
    [ConfigurationKeyName("tag_subject_prefix")] public string? TagSubjectPrefix { get; set; }
    [ConfigurationKeyName("banned_extensions")] public string? BannedExtensions { get; set; }
    [ConfigurationKeyName("banned_content_types")] public string? BannedContentTypes { get; set; }
    [ConfigurationKeyName("banned_types")] public string? BannedTypes { get; set; }
    [ConfigurationKeyName("encrypted_archives")] public string? EncryptedArchives { get; set; }
    [ConfigurationKeyName("reload_check_interval")] public string? ReloadCheckInterval { get; set; }
    [ConfigurationKeyName("reload_memory")] public string? ReloadMemory { get; set; }
    [ConfigurationKeyName("max_definitions_age")] public string? MaxDefinitionsAge { get; set; }
}

internal sealed class RawLimits
{
    public static readonly string[] Keys =
    [
        "max_message_size", "max_recipients", "max_line_length", "max_errors", "command_timeout",
        "data_timeout", "memory_threshold", "bare_newline", "max_connections", "max_connections_per_ip",
        "memory_budget", "stream_threshold",
    ];

    [ConfigurationKeyName("max_message_size")] public string? MaxMessageSize { get; set; }
    [ConfigurationKeyName("max_recipients")] public string? MaxRecipients { get; set; }
    [ConfigurationKeyName("max_line_length")] public string? MaxLineLength { get; set; }
    [ConfigurationKeyName("max_errors")] public string? MaxErrors { get; set; }
    [ConfigurationKeyName("command_timeout")] public string? CommandTimeout { get; set; }
    [ConfigurationKeyName("data_timeout")] public string? DataTimeout { get; set; }
    [ConfigurationKeyName("memory_threshold")] public string? MemoryThreshold { get; set; }
    [ConfigurationKeyName("bare_newline")] public string? BareNewline { get; set; }
    [ConfigurationKeyName("max_connections")] public string? MaxConnections { get; set; }
    [ConfigurationKeyName("max_connections_per_ip")] public string? MaxConnectionsPerIp { get; set; }
    [ConfigurationKeyName("memory_budget")] public string? MemoryBudget { get; set; }
    [ConfigurationKeyName("stream_threshold")] public string? StreamThreshold { get; set; }
}

internal sealed class RawLog
{
    public static readonly string[] Keys = ["folder"];

    [ConfigurationKeyName("folder")] public string? Folder { get; set; }
}

internal sealed class RawStatus
{
    public static readonly string[] Keys = ["listen"];

    [ConfigurationKeyName("listen")] public string? Listen { get; set; }
}

internal sealed class RawQuarantine
{
    public static readonly string[] Keys = ["folder", "copy", "retention_days"];

    [ConfigurationKeyName("folder")] public string? Folder { get; set; }
    [ConfigurationKeyName("copy")] public string? Copy { get; set; }
    [ConfigurationKeyName("retention_days")] public string? RetentionDays { get; set; }
}

internal sealed class RawNotification
{
    public static readonly string[] Keys =
    [
        "smtp_server_address", "smtp_server_port", "sender", "notify_list", "notify_recipients", "notify_sender",
        "template_folder",
    ];

    [ConfigurationKeyName("smtp_server_address")] public string? SmtpServerAddress { get; set; }
    [ConfigurationKeyName("smtp_server_port")] public string? SmtpServerPort { get; set; }
    [ConfigurationKeyName("sender")] public string? Sender { get; set; }
    [ConfigurationKeyName("notify_list")] public string? NotifyList { get; set; }
    [ConfigurationKeyName("notify_recipients")] public string? NotifyRecipients { get; set; }
    [ConfigurationKeyName("notify_sender")] public string? NotifySender { get; set; }
    [ConfigurationKeyName("template_folder")] public string? TemplateFolder { get; set; }
}

internal sealed class RawRelay
{
    public static readonly string[] Keys =
        ["local_domains", "local_domains_file", "trusted_networks", "rules_file", "pop_before_smtp_file", "pop_before_smtp_ttl",
         "recipients_file"];

    [ConfigurationKeyName("local_domains")] public string? LocalDomains { get; set; }
    [ConfigurationKeyName("local_domains_file")] public string? LocalDomainsFile { get; set; }
    [ConfigurationKeyName("trusted_networks")] public string? TrustedNetworks { get; set; }
    [ConfigurationKeyName("rules_file")] public string? RulesFile { get; set; }
    [ConfigurationKeyName("pop_before_smtp_file")] public string? PopBeforeSmtpFile { get; set; }
    [ConfigurationKeyName("pop_before_smtp_ttl")] public string? PopBeforeSmtpTtl { get; set; }
    [ConfigurationKeyName("recipients_file")] public string? RecipientsFile { get; set; }
}

internal sealed class RawAuth
{
    public static readonly string[] Keys =
        ["passwd_file", "downstream", "allow_plaintext", "max_failures", "failure_window", "failure_delay"];

    [ConfigurationKeyName("passwd_file")] public string? PasswdFile { get; set; }
    [ConfigurationKeyName("downstream")] public string? Downstream { get; set; }
    [ConfigurationKeyName("allow_plaintext")] public string? AllowPlaintext { get; set; }
    [ConfigurationKeyName("max_failures")] public string? MaxFailures { get; set; }
    [ConfigurationKeyName("failure_window")] public string? FailureWindow { get; set; }
    [ConfigurationKeyName("failure_delay")] public string? FailureDelay { get; set; }
}

internal sealed class RawTls
{
    public static readonly string[] Keys = ["certificate", "key"];

    [ConfigurationKeyName("certificate")] public string? Certificate { get; set; }
    [ConfigurationKeyName("key")] public string? Key { get; set; }
}

internal sealed class RawQueue
{
    public static readonly string[] Keys =
        ["mode", "concurrency", "min_backoff", "max_backoff", "max_lifetime", "delay_warning", "max_size"];

    [ConfigurationKeyName("mode")] public string? Mode { get; set; }
    [ConfigurationKeyName("concurrency")] public string? Concurrency { get; set; }
    [ConfigurationKeyName("min_backoff")] public string? MinBackoff { get; set; }
    [ConfigurationKeyName("max_backoff")] public string? MaxBackoff { get; set; }
    [ConfigurationKeyName("max_lifetime")] public string? MaxLifetime { get; set; }
    [ConfigurationKeyName("delay_warning")] public string? DelayWarning { get; set; }
    [ConfigurationKeyName("max_size")] public string? MaxSize { get; set; }
}
