using System.Runtime.InteropServices;

namespace Portcullis.Appliance.Systemd;

// The few libc calls the systemd integration needs that .NET does not expose.
internal static partial class Libc
{
    private const int CLOCK_MONOTONIC = 1;
    private const int F_GETFD = 1;
    private const int F_SETFD = 2;
    private const int FD_CLOEXEC = 1;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public nint tv_sec;
        public nint tv_nsec;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int clock_gettime(int clockId, out Timespec time);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc")]
    private static partial int malloc_trim(nuint pad);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int chmod([MarshalAs(UnmanagedType.LPUTF8Str)] string path, uint mode);

    // CLOCK_MONOTONIC in microseconds, as sd_notify's MONOTONIC_USEC= wants it.
    public static long MonotonicMicroseconds()
    {
        if (clock_gettime(CLOCK_MONOTONIC, out var now) != 0)
        {
            throw new InvalidOperationException($"clock_gettime failed: errno {Marshal.GetLastPInvokeError()}");
        }

        return (long)now.tv_sec * 1_000_000 + (long)now.tv_nsec / 1000;
    }

    // Descriptors systemd passes arrive without FD_CLOEXEC; children must not inherit them.
    public static bool SetCloseOnExec(int fd)
    {
        var flags = fcntl(fd, F_GETFD, 0);
        return flags >= 0 && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0;
    }

    public static bool IsOpen(int fd) => fcntl(fd, F_GETFD, 0) >= 0;

    // glibc keeps freed arenas; after an engine is freed, give the pages back to the system.
    public static void TrimHeap()
    {
        try
        {
            malloc_trim(0);
        }
        catch (EntryPointNotFoundException)
        {
            // Not glibc (musl): nothing to trim.
        }
    }

    public static void ChangeMode(string path, uint mode)
    {
        if (chmod(path, mode) != 0)
        {
            throw new IOException($"chmod {path}: errno {Marshal.GetLastPInvokeError()}");
        }
    }
}
