// libclamav unpacks MIME parts and archive members into the scratch folder ([scan] scratch_folder,
// by default temp_folder; CL_ENGINE_TMPDIR). When it cannot write them (ENOSPC) it skips what it
// could not unpack and still answers CL_CLEAN: on a full disk, a virus inside an attachment came
// back clean and was delivered. So a scan is only
// started with room for the message's unpacked parts, and a clean verdict reached while the disk
// was full anyway is not trusted (the configured on_error applies).
namespace Portcullis.Appliance.Gateway;

internal static class ScanSpace
{
    // Room libclamav needs beyond the message itself (decoded parts are smaller than the encoded
    // message; archives unpack to more, bounded by max_scan_size, which this floor cannot promise).
    public const long Floor = 1L << 20;

    public static bool HasRoomToScan(string scratchFolder, long messageLength) => Available(scratchFolder) >= messageLength + Floor;

    public static bool WasFullDuringScan(string scratchFolder) => Available(scratchFolder) < Floor;

    private static long Available(string folder)
    {
        try
        {
            return new DriveInfo(folder).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return 0; // unknown counts as full: never a reason to trust a scan
        }
    }
}
