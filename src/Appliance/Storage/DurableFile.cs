using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Portcullis.Appliance.Storage;

// Files that must survive a crash the moment the call returns (quarantine copies, the notification
// outbox): written to a temporary name in the same folder, fsync'd, renamed over the final name,
// and the folder fsync'd so the rename itself is on disk. Files are 0600, folders 0700: they hold mail.
public static partial class DurableFile
{
    public const string TempSuffix = ".tmp";

    public static void EnsureFolder(string folder)
    {
        if (Directory.Exists(folder))
        {
            return;
        }

        try
        {
            if (OperatingSystem.IsWindows())
            {
                Directory.CreateDirectory(folder);
            }
            else
            {
                Directory.CreateDirectory(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
        }
        catch (UnauthorizedAccessException e)
        {
            // Callers handle one kind of failure: the folder cannot be used.
            throw new IOException(e.Message, e);
        }
    }

    // Writes `name` in `folder` through `write`; IOException (disk full, permissions) leaves no file behind.
    public static void Write(string folder, string name, Action<FileStream> write)
    {
        var final = Path.Combine(folder, name);
        var temp = Path.Combine(folder, "." + name + "." + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4)) + TempSuffix);
        try
        {
            var options = new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                Share = FileShare.None,
            };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            using (var file = new FileStream(temp, options))
            {
                write(file);
                file.Flush(flushToDisk: true);
            }

            File.Move(temp, final, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw e as IOException ?? new IOException(e.Message, e);
        }

        SyncFolder(folder);
    }

    // fsync(2) on the folder: makes creations, renames and deletions in it durable.
    public static void SyncFolder(string folder)
    {
        var fd = open(folder, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
        {
            throw new IOException($"cannot open folder {folder} to sync it (errno {Marshal.GetLastPInvokeError()})");
        }

        try
        {
            if (fsync(fd) != 0)
            {
                throw new IOException($"fsync of folder {folder} failed (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        finally
        {
            _ = close(fd);
        }
    }

    public static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort: purge picks up what is left.
        }
    }

    private const int O_RDONLY = 0;
    private const int O_CLOEXEC = 0x80000; // the same on Linux x64 and arm64 (O_DIRECTORY is not)

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}
