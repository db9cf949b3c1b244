// sd_listen_fds(3) without libsystemd: when $LISTEN_PID names this process, descriptors 3 to
// 3+$LISTEN_FDS-1 are sockets systemd opened for us (their names, from FileDescriptorName=, in
// the colon-separated $LISTEN_FDNAMES). The variables are removed once read so that nothing
// this process starts takes them for its own.
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Portcullis.Appliance.Systemd;

internal sealed record PassedSocket(Socket Socket, string Name, int Descriptor);

internal static class SocketActivation
{
    public const int FirstDescriptor = 3;

    // The listening sockets passed to this process; empty when it was not socket-activated.
    public static IReadOnlyList<PassedSocket> TakeFromEnvironment(out string? problem)
    {
        var pid = Environment.GetEnvironmentVariable("LISTEN_PID");
        var fds = Environment.GetEnvironmentVariable("LISTEN_FDS");
        var names = Environment.GetEnvironmentVariable("LISTEN_FDNAMES");
        Environment.SetEnvironmentVariable("LISTEN_PID", null);
        Environment.SetEnvironmentVariable("LISTEN_FDS", null);
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", null);
        return Take(pid, fds, names, Environment.ProcessId, out problem);
    }

    internal static IReadOnlyList<PassedSocket> Take(string? pid, string? fds, string? names, int self, out string? problem)
    {
        problem = null;
        if (string.IsNullOrEmpty(fds))
        {
            return [];
        }

        if (!int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out var owner) || owner != self)
        {
            problem = $"LISTEN_FDS={fds} is for process {pid}, not this one ({self}); ignoring it";
            return [];
        }

        if (!int.TryParse(fds, NumberStyles.None, CultureInfo.InvariantCulture, out var count) || count < 1 || count > 1024)
        {
            problem = $"LISTEN_FDS={fds} is not a count of descriptors; ignoring it";
            return [];
        }

        var nameList = (names ?? "").Split(':');
        var sockets = new List<PassedSocket>();
        for (var i = 0; i < count; i++)
        {
            var fd = FirstDescriptor + i;
            var name = i < nameList.Length && nameList[i].Length > 0 ? nameList[i] : "unknown";
            if (!Libc.IsOpen(fd))
            {
                problem = $"LISTEN_FDS={count} but descriptor {fd} is not open";
                continue;
            }

            Libc.SetCloseOnExec(fd);
            Socket socket;
            try
            {
                socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
            }
            catch (SocketException e)
            {
                problem = $"descriptor {fd} ({name}) is not a socket: {e.Message}";
                continue;
            }

            if (socket.SocketType != SocketType.Stream || socket.LocalEndPoint is not IPEndPoint)
            {
                problem = $"descriptor {fd} ({name}) is not a TCP socket ({socket.AddressFamily} {socket.SocketType}); it is not used";
                socket.Dispose();
                continue;
            }

            sockets.Add(new PassedSocket(socket, name, fd));
        }

        return sockets;
    }

    // Which `interfaces` entry a passed socket stands for: the same address and port, with an
    // IPv4-mapped IPv6 address counted as its IPv4 address.
    public static int MatchInterface(IPEndPoint bound, IReadOnlyList<IPEndPoint> interfaces)
    {
        var address = Normalize(bound.Address);
        for (var i = 0; i < interfaces.Count; i++)
        {
            if (interfaces[i].Port == bound.Port && Normalize(interfaces[i].Address).Equals(address))
            {
                return i;
            }
        }

        return -1;
    }

    private static IPAddress Normalize(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            return address.MapToIPv4();
        }

        // Scope ids are not part of the match (fe80::1%2 and fe80::1 are the same entry).
        return address.AddressFamily == AddressFamily.InterNetworkV6 ? new IPAddress(address.GetAddressBytes()) : address;
    }
}
