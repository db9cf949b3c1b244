// sd_notify(3) without libsystemd: one datagram of newline-separated KEY=VALUE assignments to
// the AF_UNIX socket named in $NOTIFY_SOCKET (a path, or an abstract name written with a
// leading '@'). Without $NOTIFY_SOCKET (not started by systemd) every call does nothing.
// The watchdog interval comes from $WATCHDOG_USEC, honoured only when $WATCHDOG_PID is unset or
// names this process (sd_watchdog_enabled(3)).
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Systemd;

internal sealed class SystemdNotifier : IDisposable
{
    private readonly Socket? socket;
    private readonly UnixDomainSocketEndPoint? target;
    private readonly Lock sendLock = new();
    private bool warned;

    private SystemdNotifier(string? notifySocket, TimeSpan? watchdogInterval)
    {
        WatchdogInterval = watchdogInterval;
        if (string.IsNullOrEmpty(notifySocket))
        {
            return;
        }

        // '@' stands for the leading NUL of a Linux abstract socket name.
        var name = notifySocket[0] == '@' ? "\0" + notifySocket[1..] : notifySocket;
        try
        {
            target = new UnixDomainSocketEndPoint(name);
            socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        }
        catch (Exception e) when (e is SocketException or ArgumentException)
        {
            Log.Warn($"NOTIFY_SOCKET={notifySocket} is not usable: {e.Message}");
            socket?.Dispose();
            socket = null;
            target = null;
        }
    }

    public static SystemdNotifier FromEnvironment() =>
        new(Environment.GetEnvironmentVariable("NOTIFY_SOCKET"),
            WatchdogFrom(Environment.GetEnvironmentVariable("WATCHDOG_USEC"), Environment.GetEnvironmentVariable("WATCHDOG_PID"), Environment.ProcessId));

    public bool Enabled => socket is not null;

    // How often systemd expects WATCHDOG=1; null when the watchdog is off for this process.
    public TimeSpan? WatchdogInterval { get; }

    internal static TimeSpan? WatchdogFrom(string? usec, string? pid, int self)
    {
        if (!long.TryParse(usec, NumberStyles.None, CultureInfo.InvariantCulture, out var micros) || micros <= 0)
        {
            return null;
        }

        if (!string.IsNullOrEmpty(pid) && (!int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out var owner) || owner != self))
        {
            return null;
        }

        return TimeSpan.FromMicroseconds(micros);
    }

    public void Ready(string status) => Send($"READY=1\nSTATUS={status}");

    // Type=notify-reload wants MONOTONIC_USEC= with RELOADING=1 so it can tell this reload apart.
    public void Reloading(string status) =>
        Send($"RELOADING=1\nMONOTONIC_USEC={Libc.MonotonicMicroseconds().ToString(CultureInfo.InvariantCulture)}\nSTATUS={status}");

    public void Stopping(string status) => Send($"STOPPING=1\nSTATUS={status}");

    public void Status(string status) => Send("STATUS=" + status);

    public void Watchdog() => Send("WATCHDOG=1");

    public void Send(string state)
    {
        if (socket is null)
        {
            return;
        }

        // STATUS= is one line: a newline would start another assignment.
        var bytes = Encoding.UTF8.GetBytes(state);
        lock (sendLock)
        {
            try
            {
                socket.SendTo(bytes, SocketFlags.None, target!);
            }
            catch (SocketException e)
            {
                if (!warned)
                {
                    warned = true;
                    Log.Warn($"sd_notify to {Environment.GetEnvironmentVariable("NOTIFY_SOCKET")} failed: {e.Message}");
                }
            }
        }
    }

    public void Dispose() => socket?.Dispose();
}
