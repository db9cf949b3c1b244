// What a killed gateway leaves in temp_folder. Spill files are unlinked at creation, but
// libclamav (CL_ENGINE_TMPDIR is temp_folder) unpacks attachments into a per-scan directory
// "<yyyyMMdd_HHmmss>-scantemp.<random>" holding "clamav-<random>.tmp" files, and removes it only
// when the scan returns: after kill -9 or a power cut it stays, with pieces of mail in it. Only
// one gateway uses a temp_folder, so at start-up nothing in these shapes can be in use.
using System.Text.RegularExpressions;

namespace Portcullis.Appliance.Gateway;

internal static partial class TempFolderSweep
{
    [GeneratedRegex(@"^(\d{8}_\d{6}-scantemp\..+|clamav-.+|portcullis-[0-9a-f]+\.spill)$")]
    private static partial Regex Leftover();

    // Removes the leftovers of an earlier run; returns how many entries went and the ones that
    // could not be removed (reported, never fatal).
    public static (int Removed, List<string> Failed) Run(string folder)
    {
        int removed = 0;
        var failed = new List<string>();
        foreach (var entry in new DirectoryInfo(folder).EnumerateFileSystemInfos())
        {
            if (!Leftover().IsMatch(entry.Name)) continue;
            try
            {
                // A symlink is removed as a link, never followed.
                if (entry is DirectoryInfo dir && !dir.Attributes.HasFlag(FileAttributes.ReparsePoint)) dir.Delete(recursive: true);
                else entry.Delete();
                removed++;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                failed.Add($"{entry.FullName}: {e.Message}");
            }
        }
        return (removed, failed);
    }
}
