// Opening files the ways .NET's FileStream cannot (open(2), statx(2)): without following a
// symlink and checking type and owner on the opened descriptor (no race between check and use),
// and as an unnamed O_TMPFILE that no crash can leave behind. Flag values differ between
// x86-64 and arm64 (asm-generic), the two targets.
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Portcullis.Appliance.Storage;

internal static partial class UnixFile
{
    private const int O_RDONLY = 0;
    private const int O_RDWR = 2;
    private const int O_NOCTTY = 0x100;
    private const int O_NONBLOCK = 0x800;    // a FIFO planted under a quarantine name must not hang the CLI
    private const int O_CLOEXEC = 0x80000;
    private static readonly bool Arm = RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm;
    private static readonly int O_NOFOLLOW = Arm ? 0x8000 : 0x20000;
    private static readonly int O_TMPFILE = Arm ? 0x404000 : 0x410000;   // __O_TMPFILE | O_DIRECTORY

    private const int ELOOP = 40;
    private const int ENOENT = 2;
    private const int AT_EMPTY_PATH = 0x1000;
    private const uint STATX_TYPE = 0x1, STATX_MODE = 0x2, STATX_UID = 0x8;
    private const int StatxSize = 256;          // struct statx is the same on every architecture
    private const int StatxUidOffset = 20, StatxModeOffset = 28;
    private const int S_IFMT = 0xF000, S_IFREG = 0x8000;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags, uint mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte[] buffer);

    [LibraryImport("libc")]
    private static partial uint geteuid();

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint getpwnam(string name);

    // An unnamed file in `folder` (O_TMPFILE, mode 0600), or null when the file system or kernel
    // cannot make one; IOException for other failures (no space, no permission).
    public static SafeFileHandle? TryCreateUnnamed(string folder)
    {
        int fd = open(folder, O_TMPFILE | O_RDWR | O_CLOEXEC, 0x180);
        if (fd >= 0) return new SafeFileHandle(fd, ownsHandle: true);
        int errno = Marshal.GetLastPInvokeError();
        if (errno is 95 or 21 or 22) return null;   // EOPNOTSUPP, EISDIR (kernel without it), EINVAL
        throw new IOException($"cannot create a file in {folder}: {Marshal.GetPInvokeErrorMessage(errno)}");
    }

    // Opens `path` for reading only if it is a regular file, not a symlink, and owned by root, by
    // `serviceUser` or by whoever runs this process. UnauthorizedAccessException names the reason;
    // FileNotFoundException when there is nothing there.
    public static FileStream OpenOwnedRegularFile(string path, string serviceUser)
    {
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno == ELOOP) throw new UnauthorizedAccessException($"{path} is a symbolic link; refused");
            if (errno == ENOENT) throw new FileNotFoundException($"{path} does not exist", path);
            throw new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var stat = new byte[StatxSize];
            if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_MODE | STATX_UID, stat) != 0)
                throw new IOException($"{path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
            int mode = BitConverter.ToUInt16(stat, StatxModeOffset);
            uint owner = BitConverter.ToUInt32(stat, StatxUidOffset);
            if ((mode & S_IFMT) != S_IFREG)
                throw new UnauthorizedAccessException($"{path} is not a regular file; refused");
            if (owner != 0 && owner != geteuid() && owner != UserId(serviceUser))
                throw new UnauthorizedAccessException($"{path} belongs to uid {owner}, neither root nor {serviceUser}; refused");
            return new FileStream(handle, FileAccess.Read, bufferSize: 4096);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    // The uid of a user (NSS), or null when there is no such user.
    private static uint? UserId(string name)
    {
        var entry = getpwnam(name);
        // struct passwd: pw_name, pw_passwd (pointers), then pw_uid.
        return entry == 0 ? null : (uint)Marshal.ReadInt32(entry, 2 * IntPtr.Size);
    }
}
