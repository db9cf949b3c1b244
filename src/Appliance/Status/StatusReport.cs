// The two views /metrics and / serve: Prometheus text exposition format 0.0.4, and a small
// read-only HTML page. Both are built from GatewayRuntime on each request.
// The format's rules this relies on (tested in StatusReportTests): every family has one HELP and
// one TYPE line before its samples, and all its samples follow them without another family in
// between; names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*; label values
// escape \, " and newline; counters end in _total; values are Go-style floats (invariant culture).
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Gateway;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Status;

internal static class StatusReport
{
    public static string Metrics(GatewayRuntime runtime)
    {
        var m = runtime.Metrics;
        var text = new StringBuilder(4096);
        Gauge(text, "portcullis_build_info", "Build of portcullis and the libclamav it runs with.", 1,
            $"version=\"{Escape(GatewayContext.ProductVersion)}\",libclamav=\"{Escape(ClamAV.Version)}\"");
        Gauge(text, "portcullis_start_time_seconds", "When the gateway started, in Unix seconds.", m.Started.ToUnixTimeSeconds());
        Counter(text, "portcullis_connections_total", "SMTP connections accepted.", m.ConnectionsTotal);
        Gauge(text, "portcullis_connections_active", "SMTP connections open now.", m.ConnectionsActive);

        text.Append("# HELP portcullis_messages_total Messages that reached the end of DATA/BDAT, by scan verdict and action.\n");
        text.Append("# TYPE portcullis_messages_total counter\n");
        foreach (var (verdict, action, count) in m.Messages())
        {
            text.Append($"portcullis_messages_total{{verdict=\"{Escape(verdict)}\",action=\"{Escape(action)}\"}} {count}\n");
        }

        text.Append("# HELP portcullis_detections_total Messages with a detection, by class (virus, pua, heuristics, phishing, unofficial, banned) and action.\n");
        text.Append("# TYPE portcullis_detections_total counter\n");
        foreach (var (detectionClass, action, count) in m.Detections())
        {
            text.Append($"portcullis_detections_total{{class=\"{Escape(detectionClass)}\",action=\"{Escape(action)}\"}} {count}\n");
        }

        Counter(text, "portcullis_relay_refusals_total", "Recipients refused because the client may not relay to them.", m.RelayRefusals);
        Counter(text, "portcullis_auth_failures_total", "SMTP AUTH attempts refused for wrong credentials.", m.AuthFailures);
        text.Append("# HELP portcullis_connection_limit_refusals_total Connections closed at once by [limits] max_connections (total) or max_connections_per_ip (per_ip).\n");
        text.Append("# TYPE portcullis_connection_limit_refusals_total counter\n");
        foreach (var limit in new[] { "per_ip", "total" })
        {
            var count = m.ConnectionLimitRefusals().FirstOrDefault(r => r.Limit == limit).Count;
            text.Append($"portcullis_connection_limit_refusals_total{{limit=\"{limit}\"}} {count}\n");
        }

        Counter(text, "portcullis_log_lines_dropped_total", "Log lines dropped because the log channel was full.", Logging.LogWriter.Current?.DroppedTotal ?? 0);

        Counter(text, "portcullis_message_bytes_total", "Bytes of message content received.", m.Bytes);
        m.ScanSeconds.Write(text, "portcullis_scan_duration_seconds", "Time from queueing a message for the scanner to its verdict.");
        m.MessageSeconds.Write(text, "portcullis_message_duration_seconds", "Time from MAIL to the final reply, downstream included.");
        Gauge(text, "portcullis_scanner_queue_depth", "Messages waiting for a scanner thread.", runtime.Scanners.QueueDepth);
        Gauge(text, "portcullis_scanner_busy", "Scanner threads running a scan.", runtime.Scanners.Busy);
        Gauge(text, "portcullis_scanner_threads", "Scanner threads.", runtime.Scanners.ThreadCount);
        Counter(text, "portcullis_downstream_errors_total", "Failures to reach or talk to the downstream mail server.", m.DownstreamErrors);
        var queue = m.Queue;
        Gauge(text, "portcullis_queue_messages", "Messages in the store-and-forward queue.", queue.Messages);
        Gauge(text, "portcullis_queue_bytes", "Bytes of the messages in the queue.", queue.Bytes);
        Gauge(text, "portcullis_queue_oldest_age_seconds", "Age of the oldest queued message (0: queue empty).",
            queue.Oldest is { } oldest ? (long)Math.Max(0, (DateTimeOffset.UtcNow - oldest).TotalSeconds) : 0);
        Counter(text, "portcullis_queue_delivered_total", "Recipients delivered from the queue.", m.QueueDeliveredCount);
        Counter(text, "portcullis_queue_deferred_total", "Queue delivery attempts that left recipients for a later attempt.", m.QueueDeferredCount);
        Counter(text, "portcullis_queue_bounced_total", "Queued messages with recipients refused for good (a DSN to the sender).", m.QueueBouncedCount);
        Counter(text, "portcullis_queue_expired_total", "Queued messages given up at max_lifetime.", m.QueueExpiredCount);

        text.Append("# HELP portcullis_reloads_total Signature reloads, by result.\n# TYPE portcullis_reloads_total counter\n");
        text.Append($"portcullis_reloads_total{{result=\"success\"}} {m.ReloadsOk}\n");
        text.Append($"portcullis_reloads_total{{result=\"failure\"}} {m.ReloadsFailed}\n");
        m.ReloadSeconds.Write(text, "portcullis_reload_duration_seconds", "How long signature reloads took.");
        Gauge(text, "portcullis_reload_in_progress", "1 while a reload runs.", runtime.Reloader.IsReloading ? 1 : 0);
        Gauge(text, "portcullis_last_reload_failed", "1 when the last reload failed.", runtime.Reloader.LastReloadFailed ? 1 : 0);

        var loaded = runtime.Engines.TryGetCurrent(out var engine);
        Gauge(text, "portcullis_signatures", "Signatures in the engine in use (0: none loaded).", loaded ? engine.SignatureCount : 0);
        if (loaded)
        {
            Gauge(text, "portcullis_database_info", "Version of the signature databases in use.", 1, $"version=\"{Escape(engine.DatabaseVersion)}\"");
        }

        if (runtime.DefinitionsAge() is { } age)
        {
            Gauge(text, "portcullis_database_age_seconds", "Age of the newest signature database.", (long)age.TotalSeconds);
        }

        Gauge(text, "portcullis_database_outdated", "1 when the newest database is older than max_definitions_age.", runtime.DefinitionsOutdated ? 1 : 0);
        if (GatewayRuntime.QuarantineSize(runtime.Context.Config) is { } q)
        {
            Gauge(text, "portcullis_quarantine_entries", "Entries (quarantined messages) in the quarantine folder.", q.Entries);
            Gauge(text, "portcullis_quarantine_bytes", "Bytes in the quarantine folder.", q.Bytes);
        }

        ProcessMetrics(text);
        return text.ToString();
    }

    // The process_* families every Prometheus client library exports, from /proc via Process.
    internal static void ProcessMetrics(StringBuilder text)
    {
        using var self = Process.GetCurrentProcess();
        self.Refresh();
        Gauge(text, "process_resident_memory_bytes", "Resident memory size in bytes.", self.WorkingSet64);
        text.Append("# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\n")
            .Append("process_cpu_seconds_total ").Append(self.TotalProcessorTime.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)).Append('\n');
        if (OpenDescriptors() is { } open)
        {
            Gauge(text, "process_open_fds", "Number of open file descriptors.", open);
        }

        text.Append("# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\n")
            .Append("process_start_time_seconds ")
            .Append((new DateTimeOffset(self.StartTime).ToUnixTimeMilliseconds() / 1000.0).ToString("0.###", CultureInfo.InvariantCulture)).Append('\n');
    }

    private static int? OpenDescriptors()
    {
        try
        {
            return Directory.EnumerateFileSystemEntries("/proc/self/fd").Count();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    public static string Html(GatewayRuntime runtime)
    {
        var m = runtime.Metrics;
        var config = runtime.Context.Config;
        var html = new StringBuilder(4096);
        html.Append("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>portcullis ").Append(E(config.General.Hostname)).Append("</title>\n")
            .Append("<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:left}.bad{color:#b00;font-weight:bold}</style>\n")
            .Append("</head><body>\n<h1>portcullis on ").Append(E(config.General.Hostname)).Append("</h1>\n<table>\n");
        Row(html, "version", $"portcullis {GatewayContext.ProductVersion}, libclamav {ClamAV.Version}");
        Row(html, "uptime", GatewayRuntime.FormatAge(DateTimeOffset.UtcNow - m.Started));
        if (runtime.Engines.TryGetCurrent(out var engine))
        {
            Row(html, "signatures", $"{engine.SignatureCount} (database {engine.DatabaseVersion})");
            var age = runtime.DefinitionsAge();
            Row(html, "database age", age is null ? "unknown" : GatewayRuntime.FormatAge(age.Value),
                runtime.DefinitionsOutdated ? $"OUTDATED: older than max_definitions_age {ConfigValues.FormatTime(config.Scan.MaxDefinitionsAge)}" : null);
        }
        else
        {
            Row(html, "signatures", "", "NONE loaded: messages are deferred");
        }

        Row(html, "last reload", runtime.Reloader.LastReloadText, runtime.Reloader.LastReloadFailed ? "FAILED" : null);
        Row(html, "connections", $"{m.ConnectionsActive} open, {m.ConnectionsTotal} since start");
        Row(html, "messages", $"{m.MessageCount}, {m.Bytes} bytes");
        foreach (var (verdict, action, count) in m.Messages())
        {
            Row(html, $"&nbsp;&nbsp;{E(verdict)} / {E(action)}", count.ToString(CultureInfo.InvariantCulture), raw: true);
        }

        Row(html, "scanners", $"{runtime.Scanners.Busy}/{runtime.Scanners.ThreadCount} busy, {runtime.Scanners.QueueDepth} queued");
        Row(html, "downstream errors", m.DownstreamErrors.ToString(CultureInfo.InvariantCulture));
        Row(html, "refused", $"{m.RelayRefusals} relay, {m.AuthFailures} AUTH failures, {m.ConnectionLimitRefusals().Sum(r => r.Count)} over connection limits");
        if (GatewayRuntime.QuarantineSize(config) is { } q)
        {
            Row(html, "quarantine", $"{q.Entries} entries, {q.Bytes} bytes");
        }
        Row(html, "queue", QueueSummary(m));

        html.Append("</table>\n<h2>Last detections</h2>\n");
        var detections = m.LastDetections();
        if (detections.Count == 0)
        {
            html.Append("<p>none since start</p>\n");
        }
        else
        {
            html.Append("<table><tr><th>time (UTC)</th><th>virus</th><th>from</th><th>client</th><th>action</th></tr>\n");
            foreach (var d in detections)
            {
                html.Append("<tr><td>").Append(d.Time.ToString("u", CultureInfo.InvariantCulture)).Append("</td><td>").Append(E(d.Virus))
                    .Append("</td><td>").Append(E(d.From)).Append("</td><td>").Append(E(d.Client)).Append("</td><td>").Append(E(d.Action)).Append("</td></tr>\n");
            }

            html.Append("</table>\n");
        }

        html.Append("<p><a href=\"/metrics\">metrics</a></p>\n</body></html>\n");
        return html.ToString();
    }

    // The queue in one line, for the status page and `portcullis status`.
    public static string QueueSummary(GatewayMetrics m)
    {
        var queue = m.Queue;
        var oldest = queue.Oldest is { } time ? ", oldest " + GatewayRuntime.FormatAge(DateTimeOffset.UtcNow - time) : "";
        return string.Create(CultureInfo.InvariantCulture,
            $"{queue.Messages} messages, {queue.Bytes} bytes{oldest}; since start {m.QueueDeliveredCount} recipients delivered, "
            + $"{m.QueueDeferredCount} deferred, {m.QueueBouncedCount} bounced, {m.QueueExpiredCount} expired");
    }

    private static void Row(StringBuilder html, string name, string value, string? alarm = null, bool raw = false)
    {
        html.Append("<tr><th>").Append(raw ? name : E(name)).Append("</th><td>").Append(E(value));
        if (alarm is not null)
        {
            html.Append(" <span class=\"bad\">").Append(E(alarm)).Append("</span>");
        }

        html.Append("</td></tr>\n");
    }

    private static string E(string text) => WebUtility.HtmlEncode(text);

    private static void Counter(StringBuilder text, string name, string help, long value) =>
        text.Append($"# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");

    private static void Gauge(StringBuilder text, string name, string help, long value, string? labels = null) =>
        text.Append($"# HELP {name} {help}\n# TYPE {name} gauge\n{name}{(labels is null ? "" : "{" + labels + "}")} {value}\n");

    // Label values: backslash, double quote and newline are escaped.
    private static string Escape(string value) => value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");
}
