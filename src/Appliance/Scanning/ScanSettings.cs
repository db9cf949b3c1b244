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

    // Where libclamav unpacks attachments ([scan] scratch_folder, by default temp_folder).
    public static string ScratchFolder(GatewayConfig config) =>
        config.Scan.ScratchFolder.Length > 0 ? config.Scan.ScratchFolder : config.General.TempFolder;
}
