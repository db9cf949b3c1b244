using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using Portcullis.Appliance.Configuration;
using Xunit;

namespace Portcullis.Appliance.Tests.Configuration;

// rootfs/etc/portcullis/portcullis.ini is what lands on the appliance: it must load cleanly,
// show every key, and hold exactly the built-in defaults.
public sealed partial class ShippedConfigTests
{
    // Walks up from the test assembly, or (when PORTCULLIS_OBJ builds it outside the tree) from this source file.
    private static string ShippedPath([CallerFilePath] string sourceFile = "")
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Path.GetDirectoryName(sourceFile) ?? "" })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Appliance.sln")))
                {
                    return Path.Combine(dir.FullName, "rootfs", "etc", "portcullis", "portcullis.ini");
                }
            }
        }

        throw new InvalidOperationException("Appliance.sln not found above " + AppContext.BaseDirectory + " or " + sourceFile);
    }

    [Fact]
    public void ShippedFileLoadsWithoutErrors()
    {
        var path = ShippedPath();
        var config = ConfigLoader.Load(path);
        Assert.Equal(path, config.SourcePath);
    }

    [Fact]
    public void ShippedFileHoldsTheDefaults()
    {
        var shipped = ConfigLoader.Load(ShippedPath());
        var defaults = ConfigLoader.LoadFromString("", "(empty)");
        Assert.Equal(defaults.Scan, shipped.Scan);
        Assert.Equal(defaults.Limits, shipped.Limits);
        Assert.Equal(defaults.Log, shipped.Log);
        Assert.Equal(defaults.Quarantine, shipped.Quarantine);
        Assert.Equal(defaults.Notification, shipped.Notification);
        Assert.Equal(defaults.Relay, shipped.Relay);
        Assert.Equal(defaults.Auth, shipped.Auth);
        Assert.Equal(defaults.Tls, shipped.Tls);
        Assert.Equal(defaults.Status, shipped.Status);
        Assert.Equal(defaults.Queue, shipped.Queue);
        Assert.Equal(defaults.General with { Interfaces = [] }, shipped.General with { Interfaces = [] });
        Assert.Equal(defaults.General.Interfaces.Select(i => i.ToString()), shipped.General.Interfaces.Select(i => i.ToString()));
    }

    [Fact]
    public void ShippedFileShowsEveryKeyWithAComment()
    {
        var lines = File.ReadAllLines(ShippedPath());
        string[] sections = ["general", "scan", "limits", "log", "quarantine", "notification", "relay", "auth", "tls", "status", "queue"];
        string[][] keys =
        [
            ["interfaces", "hostname", "smtp_server_address", "smtp_server_port", "smtp_server_timeout", "temp_folder", "queue_folder",
             "proxy_trusted", "smtp_server_tls", "smtp_server_tls_verify", "smtp_server_ca_file", "shutdown_timeout", "control_socket"],
            ["database_folder", "timeout", "on_error", "scanner_threads", "queue_length", "max_scan_size", "max_file_size", "max_recursion", "max_files", "alert_exceeds_max",
                "scratch_folder", "action", "action_pua", "action_heuristics", "action_phishing", "action_unofficial", "action_banned", "tag_subject_prefix",
                "banned_extensions", "banned_content_types", "encrypted_archives", "banned_types", "reload_check_interval", "reload_memory", "max_definitions_age"],
            ["max_message_size", "max_recipients", "max_line_length", "max_errors", "command_timeout", "data_timeout", "memory_threshold", "bare_newline",
             "max_connections", "max_connections_per_ip", "memory_budget", "stream_threshold"],
            ["folder"],
            ["folder", "copy", "retention_days"],
            ["smtp_server_address", "smtp_server_port", "sender", "notify_list", "notify_recipients", "notify_sender", "template_folder"],
            ["local_domains", "local_domains_file", "trusted_networks", "rules_file", "pop_before_smtp_file", "pop_before_smtp_ttl",
             "recipients_file"],
            ["passwd_file", "downstream", "allow_plaintext", "max_failures", "failure_window", "failure_delay"],
            ["certificate", "key"],
            ["listen"],
            ["mode", "concurrency", "min_backoff", "max_backoff", "max_lifetime", "delay_warning", "max_size"],
        ];

        for (var s = 0; s < sections.Length; s++)
        {
            var start = Array.IndexOf(lines, $"[{sections[s]}]");
            Assert.True(start >= 0, $"[{sections[s]}] missing");
            foreach (var key in keys[s])
            {
                var at = Array.FindIndex(lines, start, l => KeyLine().Match(l) is { Success: true } m && m.Groups[1].Value == key);
                Assert.True(at > start, $"[{sections[s]}] {key} missing");
                // Keys that belong together (address and port) may share one comment block.
                var above = at - 1;
                while (KeyLine().IsMatch(lines[above]))
                {
                    above--;
                }

                Assert.StartsWith(";", lines[above]);
            }
        }
    }

    [GeneratedRegex(@"^([a-z_]+) =")]
    private static partial Regex KeyLine();
}
