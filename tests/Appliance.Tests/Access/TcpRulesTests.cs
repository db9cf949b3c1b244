using System.Diagnostics;
using System.Net;
using Portcullis.Appliance.Access;
using Xunit;

namespace Portcullis.Appliance.Tests.Access;

// tcprules in both forms. The cdb is compiled by Debian's tcprules (ucspi-tcp) from the same
// text, so the native reader and the text parser must agree with each other and with tcpserver.
public sealed class TcpRulesTests
{
    private const string Rules = """
        # comment
        192.168.1.:allow,RELAYCLIENT=""
        192.168.1.66:deny
        10.1.0.0-9:deny
        10.2-3.:allow,RELAYCLIENT="",NOTE=/a,b/
        172.16.:allow
        192.168.1.:deny
        :allow
        """;

    public static TheoryData<string> Forms => ["text", "cdb"];

    private static TcpRules Load(string form)
    {
        if (form == "text") return TcpRules.FromText(Rules);
        var dir = Directory.CreateTempSubdirectory("tcprules-");
        try
        {
            var cdb = Path.Combine(dir.FullName, "tcp.smtp.cdb");
            var start = new ProcessStartInfo("tcprules") { RedirectStandardInput = true, UseShellExecute = false };
            start.ArgumentList.Add(cdb);
            start.ArgumentList.Add(cdb + ".tmp");
            using (var process = Process.Start(start)!)
            {
                process.StandardInput.Write(Rules.Replace("\r", ""));
                process.StandardInput.Close();
                process.WaitForExit();
                Assert.True(process.ExitCode == 0, "tcprules failed (build/deps.sh installs ucspi-tcp)");
            }
            return TcpRules.FromCdb(File.ReadAllBytes(cdb));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void ThePrefixRuleGrantsRelaying(string form)
    {
        var rule = Load(form).Match(IPAddress.Parse("192.168.1.5"))!;
        Assert.False(rule.Deny);
        Assert.True(rule.RelayClient);
        Assert.Equal("192.168.1.", rule.Address);
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void TheFullAddressWinsOverAPrefix(string form)
    {
        Assert.True(Load(form).Match(IPAddress.Parse("192.168.1.66"))!.Deny);
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void RangesCoverEachAddressAndNoMore(string form)
    {
        var rules = Load(form);
        Assert.True(rules.Match(IPAddress.Parse("10.1.0.0"))!.Deny);
        Assert.True(rules.Match(IPAddress.Parse("10.1.0.9"))!.Deny);
        Assert.False(rules.Match(IPAddress.Parse("10.1.0.10"))!.Deny);
        Assert.Equal("", rules.Match(IPAddress.Parse("10.1.0.10"))!.Address);
        var ranged = rules.Match(IPAddress.Parse("10.3.7.7"))!;
        Assert.True(ranged.RelayClient);
        Assert.Equal("a,b", ranged.Environment["NOTE"]);
        Assert.Equal("", rules.Match(IPAddress.Parse("10.4.0.1"))!.Address);
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void AllowWithoutRelayClientAndTheEmptyDefault(string form)
    {
        var rules = Load(form);
        var plain = rules.Match(IPAddress.Parse("172.16.9.9"))!;
        Assert.False(plain.Deny);
        Assert.False(plain.RelayClient);
        var fallback = rules.Match(IPAddress.Parse("203.0.113.1"))!;
        Assert.Equal("", fallback.Address);
        Assert.False(fallback.Deny);
        Assert.True(rules.Match(IPAddress.Parse("::ffff:192.168.1.66"))!.Deny); // mapped IPv4
    }

    [Fact]
    public void LookupOrderIsAddressThenShorterPrefixesThenEmpty()
    {
        Assert.Equal(["1.2.3.4", "1.2.3.", "1.2.", "1.", ""], TcpRules.LookupKeys(IPAddress.Parse("1.2.3.4")));
    }

    [Fact]
    public void BadRulesAreRefusedWithTheLine()
    {
        Assert.Contains("line 2", Assert.Throws<FormatException>(() => TcpRules.FromText("1.2.3.4:allow\n1.2.3.5:maybe\n")).Message);
        Assert.Contains("line 1", Assert.Throws<FormatException>(() => TcpRules.FromText("1.2.3.x-4:deny\n")).Message);
        Assert.Throws<InvalidDataException>(() => TcpRules.FromCdb(new byte[100]));
    }
}
