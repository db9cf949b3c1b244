using System.Net;
using System.Net.Sockets;
using System.Text;
using Portcullis.Appliance.Systemd;
using Xunit;

namespace Portcullis.Appliance.Tests.Systemd;

// The parts of sd_notify and sd_listen_fds that do not need a process of their own.
public sealed class SystemdTests
{
    [Theory]
    [InlineData("30000000", null, 30.0)]
    [InlineData("30000000", "", 30.0)]
    [InlineData("1500000", "SELF", 1.5)]
    [InlineData("30000000", "1", null)]   // for another process
    [InlineData("0", null, null)]
    [InlineData("x", null, null)]
    [InlineData(null, null, null)]
    public void WatchdogIntervalHonoursWatchdogPid(string? usec, string? pid, double? seconds)
    {
        var self = Environment.ProcessId;
        var interval = SystemdNotifier.WatchdogFrom(usec, pid == "SELF" ? self.ToString() : pid, self);
        Assert.Equal(seconds, interval?.TotalSeconds);
    }

    [Fact]
    public void ListenFdsForAnotherProcessAreIgnored()
    {
        var passed = SocketActivation.Take("1", "2", "smtp:smtp", Environment.ProcessId + 1, out var problem);
        Assert.Empty(passed);
        Assert.Contains("not this one", problem);
    }

    [Fact]
    public void NoListenFdsIsNoProblem()
    {
        Assert.Empty(SocketActivation.Take(null, null, null, Environment.ProcessId, out var problem));
        Assert.Null(problem);
    }

    [Theory]
    [InlineData("127.0.0.1", 25, 1)]
    [InlineData("::ffff:127.0.0.1", 25, 1)]
    [InlineData("::", 25, 2)]
    [InlineData("0.0.0.0", 25, 0)]
    [InlineData("127.0.0.1", 26, -1)]
    [InlineData("10.0.0.1", 25, -1)]
    public void PassedSocketsMatchInterfacesByAddressAndPort(string address, int port, int expected)
    {
        IPEndPoint[] interfaces =
        [
            new(IPAddress.Any, 25),
            new(IPAddress.Loopback, 25),
            new(IPAddress.IPv6Any, 25),
        ];
        Assert.Equal(expected, SocketActivation.MatchInterface(new IPEndPoint(IPAddress.Parse(address), port), interfaces));
    }

    [Fact]
    public void MonotonicClockIsMicroseconds()
    {
        var a = Libc.MonotonicMicroseconds();
        var b = Libc.MonotonicMicroseconds();
        Assert.True(a > 0 && b >= a);
        // Stopwatch reads the same CLOCK_MONOTONIC on Linux (nanoseconds).
        // Divide first: ticks × 10^6 overflows a long once the machine has been up for about 2.5 hours.
        var stopwatchMicros = (long)(System.Diagnostics.Stopwatch.GetTimestamp() / (System.Diagnostics.Stopwatch.Frequency / 1_000_000.0));
        Assert.InRange(stopwatchMicros - b, 0, 5_000_000);
    }
}
