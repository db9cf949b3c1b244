using Portcullis.Appliance.Gateway;
using Xunit;

namespace Portcullis.Appliance.Tests.Gateway;

// What kill -9 leaves in temp_folder (libclamav's per-scan directories) goes at the next start;
// nothing else in the folder is touched.
public sealed class TempFolderSweepTests : IDisposable
{
    private readonly string _temp = Directory.CreateTempSubdirectory("portcullis-sweep-").FullName;

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    [Fact]
    public void Scan_leftovers_of_a_killed_run_are_removed_and_nothing_else()
    {
        var scanDir = Directory.CreateDirectory(Path.Combine(_temp, "20261123_190900-scantemp.a0207ff213"));
        File.WriteAllText(Path.Combine(scanDir.FullName, "clamav-0123456789abcdef.tmp"), "unpacked attachment");
        Directory.CreateDirectory(Path.Combine(scanDir.FullName, "nested"));
        File.WriteAllText(Path.Combine(_temp, "clamav-fedcba9876543210.tmp"), "x");
        File.WriteAllText(Path.Combine(_temp, "portcullis-00112233445566778899aabb.spill"), "x");
        File.WriteAllText(Path.Combine(_temp, "operator-notes.txt"), "keep");
        Directory.CreateDirectory(Path.Combine(_temp, "quarantine"));
        var outside = Directory.CreateDirectory(Path.Combine(_temp, "..", Path.GetFileName(_temp) + "-outside")).FullName;
        File.WriteAllText(Path.Combine(outside, "victim"), "keep");
        File.CreateSymbolicLink(Path.Combine(_temp, "20260101_000000-scantemp.link"), outside);
        try
        {
            var (removed, failed) = TempFolderSweep.Run(_temp);

            Assert.Empty(failed);
            Assert.Equal(4, removed);
            Assert.Equal(["operator-notes.txt", "quarantine"], Directory.EnumerateFileSystemEntries(_temp).Select(Path.GetFileName).Order());
            Assert.True(File.Exists(Path.Combine(outside, "victim")), "the sweep followed a symlink out of temp_folder");
        }
        finally
        {
            Directory.Delete(outside, recursive: true);
        }
    }
}
