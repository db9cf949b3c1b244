using Portcullis.Appliance.Cli;
using Portcullis.Appliance.Configuration;
using Xunit;
using static Portcullis.Appliance.Tests.Configuration.IniText;

namespace Portcullis.Appliance.Tests.Configuration;

// [general] smtp_server_address as a list of servers tried in order (issue 10's failover), and
// smtp_server_connections, the bound of the downstream pool (issue 13).
public class DownstreamServersConfigTests
{
    [Fact]
    public void AListGivesEachServerInOrderWithItsPortOrSmtpServerPort()
    {
        var general = Load("[general]\nsmtp_server_address = 10.0.0.2, mx2.example.com:2526 ,[2001:db8::25]:26, ::1\nsmtp_server_port = 2600\n").General;
        Assert.Equal([("10.0.0.2", 2600), ("mx2.example.com", 2526), ("2001:db8::25", 26), ("::1", 2600)], general.SmtpServers);
        Assert.Equal(("10.0.0.2", 2600), (general.SmtpServerAddress, general.SmtpServerPort));   // the first server, for every older use
        Assert.Equal("10.0.0.2:2600, mx2.example.com:2526, [2001:db8::25]:26, [::1]:2600", CommandLine.ForwardTarget(general));
    }

    [Theory]
    [InlineData("mail.example.com", "mail.example.com", 2525)]
    [InlineData("::1", "::1", 2525)]
    [InlineData("[::1]", "::1", 2525)]
    [InlineData("127.0.0.1:2626", "127.0.0.1", 2626)]
    public void OneServerStaysAsBefore(string value, string host, int port)
    {
        var general = Load($"[general]\nsmtp_server_address = {value}\n").General;
        Assert.Equal((host, port), (general.SmtpServerAddress, general.SmtpServerPort));
        Assert.Equal([(host, port)], general.SmtpServers);
    }

    [Fact]
    public void TheDefaultIsOneServerAndAtMostAHundredConnections()
    {
        var general = Load("").General;
        Assert.Equal([("127.0.0.1", 2525)], general.SmtpServers);
        Assert.Equal(100, general.SmtpServerConnections);   // Postfix's default_process_limit
        Assert.Equal(0, Load("[general]\nsmtp_server_connections = 0\n").General.SmtpServerConnections);
        Assert.Equal(7, Load("[general]\nsmtp_server_connections = 7\n").General.SmtpServerConnections);
    }

    [Theory]
    [InlineData("10.0.0.2, [::1", "[::1", "'[' without ']'")]
    [InlineData("mx.example.com:0", "mx.example.com:0", "port '0' is not a number from 1 to 65535")]
    [InlineData("mx.example.com:99999", "mx.example.com:99999", "port '99999'")]
    [InlineData("[mx.example.com]:25", "[mx.example.com]:25", "is not an IP address")]
    [InlineData("[::1]x", "[::1]x", "unexpected 'x' after ']'")]
    [InlineData("10.0.0.2,,10.0.0.3", "", "neither an IP address nor a host name")]
    [InlineData("300.1.1.1, 10.0.0.3", "300.1.1.1", "neither an IP address nor a host name")]
    [InlineData("no such host", "no such host", "neither an IP address nor a host name")]
    public void ABadEntryIsNamedWithTheKeyAndWhatWasExpected(string value, string entry, string problem)
    {
        var error = SingleError($"[general]\nsmtp_server_address = {value}\n");
        Assert.StartsWith($"{Source}: [general] smtp_server_address = \"{value}\": entry \"{entry}\": ", error);
        Assert.Contains(problem, error, StringComparison.Ordinal);
        Assert.Contains("expected an IP address or a host name, or several separated by commas", error, StringComparison.Ordinal);
    }

    [Fact]
    public void AServerListedTwiceIsAnError()
    {
        var error = SingleError("[general]\nsmtp_server_address = 10.0.0.2:25, 10.0.0.2:25\n");
        Assert.Contains("entry \"10.0.0.2:25\" is listed twice", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("many")]
    public void SmtpServerConnectionsMustBeAPositiveNumber(string value)
    {
        var error = SingleError($"[general]\nsmtp_server_connections = {value}\n");
        Assert.StartsWith($"{Source}: [general] smtp_server_connections = \"{value}\": expected", error);
    }

    [Fact]
    public void AnyServerInTheListBeingOurOwnListenerIsALoop()
    {
        var error = SingleError("[general]\ninterfaces = 0.0.0.0:25\nsmtp_server_address = 192.0.2.10, 127.0.0.1:25\n");
        Assert.Contains("mail would loop", error, StringComparison.Ordinal);
    }
}
