using System.Runtime.InteropServices;

namespace Portcullis.Appliance.Runtime;

// RLIMIT_NOFILE. CoreCLR raises its soft limit to the hard one at start-up; NativeAOT does not
// (measured with .NET 10: started under 1024/20000, the daemon kept 1024), and systemd starts
// services with a soft limit of 1024, which 500 sessions with their downstream connections exceed.
internal static partial class OpenFileLimit
{
    private const int RLIMIT_NOFILE = 7;

    // Each session holds the client's socket and its downstream connection; a spilled message, a
    // third. The rest: listeners, log files, the signature folder while it loads, libclamav's
    // scratch files per scanner thread.
    public const int PerSession = 2;
    public const int Reserve = 128;

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getrlimit(int resource, out RLimit limit);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setrlimit(int resource, in RLimit limit);

    // The soft and hard limits, or null when they cannot be read.
    public static (ulong Soft, ulong Hard)? Read() =>
        getrlimit(RLIMIT_NOFILE, out var limit) == 0 ? (limit.Current, limit.Maximum) : null;

    // Raises the soft limit to the hard one, as CoreCLR does; returns the soft limit now in force.
    public static ulong? RaiseToHard()
    {
        if (getrlimit(RLIMIT_NOFILE, out var limit) != 0)
        {
            return null;
        }

        return limit.Current < limit.Maximum && TrySetSoft(limit.Maximum) ? limit.Maximum : limit.Current;
    }

    // Sets the soft limit (at most the hard one); false when the system refuses.
    internal static bool TrySetSoft(ulong soft) =>
        getrlimit(RLIMIT_NOFILE, out var limit) == 0 && setrlimit(RLIMIT_NOFILE, limit with { Current = soft }) == 0;

    // Descriptors max_connections sessions need at most (0 connections: no limit, nothing to say).
    public static ulong Needed(int maxConnections) => (ulong)maxConnections * PerSession + Reserve;
}
