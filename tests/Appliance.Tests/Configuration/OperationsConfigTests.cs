using System.Net;
using Portcullis.Appliance.Configuration;
using Xunit;

using static Portcullis.Appliance.Tests.Configuration.IniText;

namespace Portcullis.Appliance.Tests.Configuration;

// The keys for running as a service: shutdown_timeout, control_socket, the reload keys and [status].
public sealed class OperationsConfigTests
{
    [Fact]
    public void Defaults()
    {
        var config = Load("");
        Assert.Equal(TimeSpan.FromSeconds(30), config.General.ShutdownTimeout);
        Assert.Equal("/run/portcullis/control.sock", config.General.ControlSocket);
        Assert.Equal(TimeSpan.FromMinutes(5), config.Scan.ReloadCheckInterval);
        Assert.Equal(ReloadMemory.Concurrent, config.Scan.ReloadMemory);
        Assert.Equal(TimeSpan.FromDays(3), config.Scan.MaxDefinitionsAge);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 9025), config.Status.Listen);
    }

    [Fact]
    public void EveryKeyIsRead()
    {
        var config = Load("""
            [general]
            shutdown_timeout = 2m
            control_socket = /run/gw/ctl.sock
            [scan]
            reload_check_interval = 0
            reload_memory = LOW
            max_definitions_age = 7d
            [status]
            listen = [::1]:9100
            """);
        Assert.Equal(TimeSpan.FromMinutes(2), config.General.ShutdownTimeout);
        Assert.Equal("/run/gw/ctl.sock", config.General.ControlSocket);
        Assert.Equal(TimeSpan.Zero, config.Scan.ReloadCheckInterval);
        Assert.Equal(ReloadMemory.Low, config.Scan.ReloadMemory);
        Assert.Equal(TimeSpan.FromDays(7), config.Scan.MaxDefinitionsAge);
        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, 9100), config.Status.Listen);
    }

    [Fact]
    public void EmptyValuesSwitchOff()
    {
        var config = Load("[general]\ncontrol_socket =\n[scan]\nreload_check_interval = off\n[status]\nlisten =\n");
        Assert.Equal("", config.General.ControlSocket);
        Assert.Equal(TimeSpan.Zero, config.Scan.ReloadCheckInterval);
        Assert.Null(config.Status.Listen);
    }

    [Theory]
    [InlineData("[general]\nshutdown_timeout = 0", "[general] shutdown_timeout = \"0\": expected a time such as 30s, 5m or 1h")]
    [InlineData("[general]\ncontrol_socket = relative.sock", "[general] control_socket = \"relative.sock\": expected an absolute path of a socket file")]
    [InlineData("[scan]\nreload_memory = half", "[scan] reload_memory = \"half\": expected one of concurrent, low")]
    [InlineData("[scan]\nmax_definitions_age = 400d", "[scan] max_definitions_age = \"400d\": expected a time such as 30s, 5m, 1h or 3d (a bare number is seconds), from 1s to 365d")]
    [InlineData("[scan]\nreload_check_interval = soon", "[scan] reload_check_interval = \"soon\": expected a time such as 30s, 5m or 1h (a bare number is seconds), from 1s to 24h (or 0 for never)")]
    [InlineData("[status]\nlisten = 127.0.0.1", "[status] listen = \"127.0.0.1\": expected an address:port such as 127.0.0.1:9025")]
    [InlineData("[status]\nport = 9025", "[status] unknown key \"port\" (known keys: listen)")]
    public void BadValuesNameFileSectionKeyAndExpectation(string ini, string expected)
    {
        var error = SingleError(ini);
        Assert.StartsWith(Source + ": ", error);
        Assert.Contains(expected, error);
    }

    [Fact]
    public void ControlSocketLongerThanSockaddrIsRefused()
    {
        var path = "/run/" + new string('x', 110) + ".sock";
        Assert.Contains("at most 107 bytes", SingleError($"[general]\ncontrol_socket = {path}"));
    }

    [Fact]
    public void ReadControlSocketIgnoresErrorsElsewhere()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, "[general]\ncontrol_socket = /tmp/x/ctl.sock\nsmtp_server_port = nonsense\n[nosuch]\nkey = 1\n");
            Assert.Equal("/tmp/x/ctl.sock", ConfigLoader.ReadControlSocket(file));
            File.WriteAllText(file, "[scan]\ntimeout = 1s\n");
            Assert.Equal("/run/portcullis/control.sock", ConfigLoader.ReadControlSocket(file));
        }
        finally
        {
            File.Delete(file);
        }
    }
}
