using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Cli;

// `portcullis scan -r FOLDER`: every regular file under a folder, in name order. As clamscan does,
// links below the folder are not followed (no loops, nothing outside the tree) and FIFOs, sockets
// and terminals are skipped; a folder that cannot be read is an error, never silently empty.
internal static partial class ScanTree
{
    private const int O_RDONLY = 0;
    private const int O_NONBLOCK = 0x800; // the same on Linux x64 and arm64
    private const int O_CLOEXEC = 0x80000;
    private const int SEEK_CUR = 1;

    public static void Scan(ScanEngine engine, string folder, ScanReport report, Func<ScanInspector?>? inspector = null)
    {
        List<FileSystemInfo> entries;
        try
        {
            entries = [.. new DirectoryInfo(folder).EnumerateFileSystemInfos().OrderBy(e => e.Name, StringComparer.Ordinal)];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            report.Add(folder, ScanResult.Error(0, $"cannot read the folder: {e.Message}"));
            return;
        }

        foreach (var entry in entries)
        {
            var path = Path.Combine(folder, entry.Name);
            if (entry.LinkTarget is not null)
            {
                continue;
            }

            if (entry is DirectoryInfo)
            {
                Scan(engine, path, report, inspector);
            }
            else if (ScanRegularFile(engine, path, inspector?.Invoke()) is { } result)
            {
                report.Add(path, result);
            }
        }
    }

    // Null for a file that is not a regular one. Opened without blocking: open(2) on a FIFO waits for a writer.
    private static ScanResult? ScanRegularFile(ScanEngine engine, string path, ScanInspector? inspector)
    {
        var fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
        {
            return ScanResult.Error(0, Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError()));
        }

        using var file = new SafeFileHandle(fd, ownsHandle: true);

        // Pipes, sockets and terminals cannot seek; libclamav reads files with pread.
        if (lseek(fd, 0, SEEK_CUR) < 0)
        {
            return null;
        }

        return engine.ScanFile(file, path, inspector);
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(int fd, long offset, int whence);
}
