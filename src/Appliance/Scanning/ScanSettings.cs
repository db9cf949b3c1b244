using Portcullis.Appliance.Configuration;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Scanning;

// How the [scan] section becomes libclamav's engine settings; shared by the daemon, its reloads
// and `portcullis scan`.
internal static class ScanSettings
{
    public static EngineOptions EngineOptionsFor(GatewayConfig config) => new(config.Scan.DatabaseFolder)
    {
        MaxScanSize = config.Scan.MaxScanSize,
        MaxFileSize = config.Scan.MaxFileSize,
        MaxRecursion = config.Scan.MaxRecursion,
        MaxFiles = config.Scan.MaxFiles,
        AlertExceedsMax = config.Scan.AlertExceedsMax,
        ScanTimeout = config.Scan.Timeout,

        // A workstation running `scan` may not have the appliance's folders; libclamav then uses $TMPDIR.
        TempFolder = Directory.Exists(ScratchFolder(config)) ? ScratchFolder(config) : null,
    };

    // Where libclamav unpacks attachments: [scan] scratch_folder; empty: scan/ in the unit's
    // RuntimeDirectory (a tmpfs under /run; libclamav's per-message mkdir on disk cost 1.45x the
    // CPU of a small message), else temp_folder.
    public static string ScratchFolder(GatewayConfig config) =>
        ScratchFolder(config, Environment.GetEnvironmentVariable("RUNTIME_DIRECTORY"));

    // runtimeDirectory: systemd's $RUNTIME_DIRECTORY, the unit's RuntimeDirectory= paths joined by ':'.
    internal static string ScratchFolder(GatewayConfig config, string? runtimeDirectory)
    {
        if (config.Scan.ScratchFolder.Length > 0)
        {
            return config.Scan.ScratchFolder;
        }

        var first = runtimeDirectory?.Split(':')[0];
        return string.IsNullOrEmpty(first) ? config.General.TempFolder : Path.Combine(first, "scan");
    }
}
