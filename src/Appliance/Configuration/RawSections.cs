using Microsoft.Extensions.Configuration;

namespace Portcullis.Appliance.Configuration;

// What the configuration binding source generator fills in: each INI section as plain strings
// (null = key absent). All conversion and validation happens in ConfigLoader so that every bad
// value can be reported with its file, section and key. `Keys` lists the canonical key names.
internal sealed class RawGeneral
{
    public static readonly string[] Keys =
        ["interfaces", "hostname", "smtp_server_address", "smtp_server_port", "smtp_server_timeout", "temp_folder", "queue_folder"];

    [ConfigurationKeyName("interfaces")] public string? Interfaces { get; set; }
    [ConfigurationKeyName("hostname")] public string? Hostname { get; set; }
    [ConfigurationKeyName("smtp_server_address")] public string? SmtpServerAddress { get; set; }
    [ConfigurationKeyName("smtp_server_port")] public string? SmtpServerPort { get; set; }
    [ConfigurationKeyName("smtp_server_timeout")] public string? SmtpServerTimeout { get; set; }
    [ConfigurationKeyName("temp_folder")] public string? TempFolder { get; set; }
    [ConfigurationKeyName("queue_folder")] public string? QueueFolder { get; set; }
}

internal sealed class RawScan
{
    public static readonly string[] Keys =
    [
        "database_folder", "timeout", "on_error", "scanner_threads", "queue_length", "max_scan_size",
        "max_file_size", "max_recursion", "max_files", "alert_exceeds_max", "scratch_folder", "action", "action_pua",
        "action_heuristics", "action_phishing", "action_unofficial", "action_banned", "tag_subject_prefix",
        "banned_extensions", "banned_content_types", "encrypted_archives",
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
    [ConfigurationKeyName("encrypted_archives")] public string? EncryptedArchives { get; set; }
}

internal sealed class RawLimits
{
    public static readonly string[] Keys =
    [
        "max_message_size", "max_recipients", "max_line_length", "max_errors", "command_timeout",
        "data_timeout", "memory_threshold", "bare_newline",
    ];

    [ConfigurationKeyName("max_message_size")] public string? MaxMessageSize { get; set; }
    [ConfigurationKeyName("max_recipients")] public string? MaxRecipients { get; set; }
    [ConfigurationKeyName("max_line_length")] public string? MaxLineLength { get; set; }
    [ConfigurationKeyName("max_errors")] public string? MaxErrors { get; set; }
    [ConfigurationKeyName("command_timeout")] public string? CommandTimeout { get; set; }
    [ConfigurationKeyName("data_timeout")] public string? DataTimeout { get; set; }
    [ConfigurationKeyName("memory_threshold")] public string? MemoryThreshold { get; set; }
    [ConfigurationKeyName("bare_newline")] public string? BareNewline { get; set; }
}

internal sealed class RawLog
{
    public static readonly string[] Keys = ["folder"];

    [ConfigurationKeyName("folder")] public string? Folder { get; set; }
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
