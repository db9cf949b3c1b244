using System.Net;
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Gateway;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.Appliance.Tests.Access;

public sealed class RelayPolicyTests : IDisposable
{
    private static readonly IPAddress Untrusted = IPAddress.Parse("198.51.100.7");
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("relay-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static RelaySection Section(string local = "local.test, .sub.test") => new()
    {
        LocalDomains = new ValueList<string>(local.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)),
    };

    private static SmtpPath Path(string text)
    {
        Assert.True(SmtpPath.TryParse(text, false, out var path, out var error), error);
        return path;
    }

    private static bool Allowed(RelayPolicy policy, IPAddress client, string rcpt, string? user = null)
    {
        Assert.Null(policy.OnConnect(client, out var access));
        return policy.OnRecipient(access, user, Path(rcpt), out _) is null;
    }

    [Theory]
    [InlineData("<user@local.test>")]
    [InlineData("<User@LOCAL.TEST>")]
    [InlineData("<user@local.test.>")]
    [InlineData("<\"john smith\"@local.test>")]
    [InlineData("<user@deep.sub.test>")]
    [InlineData("<Postmaster>")]
    public void AnyoneMayMailLocalDomains(string rcpt) => Assert.True(Allowed(new RelayPolicy(Section()), Untrusted, rcpt));

    [Theory]
    [InlineData("<user@foreign.test>")]
    [InlineData("<user%foreign.test@local.test>")]
    [InlineData("<\"user@foreign.test\"@local.test>")]
    [InlineData("<\"user\\@foreign.test\"@local.test>")]
    [InlineData("<foreign.test!user@local.test>")]
    [InlineData("<@local.test:user@foreign.test>")]
    [InlineData("<@local.test:user@local.test>")]
    [InlineData("<user@[192.0.2.1]>")]
    [InlineData("<user@sub.test>")]
    [InlineData("<user@local.test.foreign.test>")]
    [InlineData("<user@notlocal.test>")]
    public void RelayTricksAreRefusedForUntrustedClients(string rcpt)
    {
        var policy = new RelayPolicy(Section());
        Assert.Null(policy.OnConnect(Untrusted, out var access));
        var refusal = policy.OnRecipient(access, null, Path(rcpt), out _);
        Assert.NotNull(refusal);
        Assert.Equal(550, refusal.Code);
        Assert.Equal("5.7.1", refusal.Enhanced);
    }

    [Fact]
    public void UserAtForeignAtLocalIsParsedAsARoutingLocalPart()
    {
        // "user@foreign@local" is not RFC 5321 syntax unquoted; quoted it must still be refused.
        Assert.False(SmtpPath.TryParse("<user@foreign.test@local.test>", false, out _, out _) && Allowed(new RelayPolicy(Section()), Untrusted, "<user@foreign.test@local.test>"));
        Assert.False(Allowed(new RelayPolicy(Section()), Untrusted, "<\"user@foreign.test\"@local.test>"));
    }

    [Fact]
    public void TrustedNetworksAuthAndRelayClientMayRelayAnywhere()
    {
        var section = Section() with { TrustedNetworks = NetworkList.TryParse("127.0.0.0/8, 2001:db8::/32", out var n, out _) ? n : throw new InvalidOperationException() };
        var policy = new RelayPolicy(section);
        Assert.True(Allowed(policy, IPAddress.Loopback, "<user@foreign.test>"));
        Assert.True(Allowed(policy, IPAddress.Parse("2001:db8::5"), "<user@foreign.test>"));
        Assert.True(Allowed(policy, IPAddress.Parse("::ffff:127.0.0.1"), "<user@foreign.test>"));
        Assert.True(Allowed(policy, Untrusted, "<user@foreign.test>", user: "alice"));
        Assert.False(Allowed(policy, Untrusted, "<user@foreign.test>"));
    }

    [Fact]
    public void RulesFileDenyRefusesTheConnectionAndRelayClientRelays()
    {
        var rules = System.IO.Path.Combine(_dir.FullName, "tcp.smtp");
        File.WriteAllText(rules, "198.51.100.:allow,RELAYCLIENT=\"\"\n203.0.113.9:deny\n:allow\n");
        var policy = new RelayPolicy(Section() with { RulesFile = rules });
        var refusal = policy.OnConnect(IPAddress.Parse("203.0.113.9"), out _);
        Assert.Equal(554, refusal?.Code);
        Assert.True(Allowed(policy, Untrusted, "<user@foreign.test>"));
        Assert.False(Allowed(policy, IPAddress.Parse("203.0.113.10"), "<user@foreign.test>"));
    }

    [Fact]
    public void LocalDomainsFileIsRead()
    {
        var file = System.IO.Path.Combine(_dir.FullName, "domains");
        File.WriteAllText(file, "# ours\nFiled.Test.\n");
        var policy = new RelayPolicy(Section("") with { LocalDomainsFile = file });
        Assert.True(Allowed(policy, Untrusted, "<a@filed.test>"));
        Assert.False(Allowed(policy, Untrusted, "<a@local.test>"));
    }

    [Fact]
    public void PopBeforeSmtpEntriesStartAndExpire()
    {
        var file = System.IO.Path.Combine(_dir.FullName, "pop");
        var clock = new ManualClock(DateTimeOffset.FromUnixTimeSeconds(1_700_000_000));
        var policy = new RelayPolicy(Section() with { PopBeforeSmtpFile = file, PopBeforeSmtpTtl = TimeSpan.FromMinutes(10) }, clock, TimeSpan.Zero);
        Assert.False(Allowed(policy, Untrusted, "<user@foreign.test>")); // no file yet

        File.WriteAllText(file, $"{Untrusted} {clock.Now.ToUnixTimeSeconds() - 60}\n203.0.113.1 {clock.Now.ToUnixTimeSeconds() - 3600}\nnonsense\n");
        Assert.True(Allowed(policy, Untrusted, "<user@foreign.test>"));
        Assert.False(Allowed(policy, IPAddress.Parse("203.0.113.1"), "<user@foreign.test>")); // older than the ttl

        clock.Now += TimeSpan.FromMinutes(10);
        Assert.False(Allowed(policy, Untrusted, "<user@foreign.test>"));
        Assert.True(Allowed(policy, Untrusted, "<user@local.test>"));
    }

    [Fact]
    public void PopBeforeSmtpEntriesWithoutATimeUseTheFileTime()
    {
        var list = PopBeforeSmtpList.Parse("198.51.100.7\n", DateTimeOffset.FromUnixTimeSeconds(1000));
        Assert.True(list.Allows(Untrusted, DateTimeOffset.FromUnixTimeSeconds(1500), TimeSpan.FromSeconds(600)));
        Assert.False(list.Allows(Untrusted, DateTimeOffset.FromUnixTimeSeconds(1700), TimeSpan.FromSeconds(600)));
    }

    [Fact]
    public void PopBeforeSmtpEntryStampedInTheFutureGrantsNothing()
    {
        // A hook with a wrong clock writes a login a year ahead: that must not open relaying for a year.
        var list = PopBeforeSmtpList.Parse("198.51.100.7 " + (1000 + 365 * 86400) + "\n", DateTimeOffset.FromUnixTimeSeconds(1000));
        Assert.False(list.Allows(Untrusted, DateTimeOffset.FromUnixTimeSeconds(1500), TimeSpan.FromSeconds(600)));
        var skewed = PopBeforeSmtpList.Parse("198.51.100.7 1060\n", DateTimeOffset.FromUnixTimeSeconds(1000));
        Assert.True(skewed.Allows(Untrusted, DateTimeOffset.FromUnixTimeSeconds(1000), TimeSpan.FromSeconds(600))); // a minute of skew is fine
    }

    private sealed class ManualClock(DateTimeOffset start) : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = start;
        public override DateTimeOffset GetUtcNow() => Now;
    }
}
