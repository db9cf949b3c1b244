using System.Text;
using Portcullis.Appliance.Logging;
using Xunit;

namespace Portcullis.Appliance.Tests.Logging;

// The key=value message line and the sd-daemon level prefixes.
public sealed class MessageLogTests
{
    private static readonly MessageLogEntry Sample = new()
    {
        Session = "a1b2c3",
        Client = "[192.0.2.1]:50000",
        Helo = "mx.example.com",
        From = "alice@example.com",
        Recipients = ["bob@example.org", "carol@example.org"],
        Size = 2048,
        Verdict = MessageVerdict.Clean,
        Virus = "",
        Action = MessageAction.Delivered,
        Downstream = "250 2.0.0 Ok: queued as 4XyZ",
        Milliseconds = 37,
    };

    [Fact]
    public void FieldsComeInTheDocumentedOrder()
    {
        Assert.Equal(
            "session=a1b2c3 client=[192.0.2.1]:50000 helo=mx.example.com from=alice@example.com "
            + "rcpt=bob@example.org,carol@example.org size=2048 verdict=clean virus=\"\" action=delivered "
            + "downstream=\"250 2.0.0 Ok: queued as 4XyZ\" ms=37",
            MessageLog.Format(Sample));
    }

    [Fact]
    public void DefaultEntryHasEmptyQuotedValues()
    {
        Assert.Equal(
            "session=\"\" client=\"\" helo=\"\" from=\"\" rcpt=\"\" size=0 verdict=none virus=\"\" action=\"\" downstream=\"\" ms=0",
            MessageLog.Format(new MessageLogEntry()));
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("", "\"\"")]
    [InlineData("two words", "\"two words\"")]
    [InlineData("a=b", "\"a=b\"")]
    [InlineData("say \"hi\"", "\"say \\\"hi\\\"\"")]
    [InlineData("back\\slash", "\"back\\\\slash\"")]
    [InlineData("line\r\nbreak", "\"line\\x0D\\x0Abreak\"")]
    [InlineData("nul\0tab\tdel\x7f", "\"nul\\x00tab\\x09del\\x7F\"")]
    [InlineData("c1\u0085", "\"c1\\x85\"")]
    [InlineData("ünïcødé", "ünïcødé")]
    [InlineData("<>@[]:,;", "<>@[]:,;")]
    public void ValuesAreQuotedAndEscapedWhenNeeded(string value, string expected)
    {
        var line = MessageLog.Format(new MessageLogEntry { Virus = value });
        Assert.Contains(" virus=" + expected + " action=", line, StringComparison.Ordinal);
    }

    [Fact]
    public void VerdictWords()
    {
        Assert.Equal("none", MessageLog.VerdictText(MessageVerdict.None));
        Assert.Equal("clean", MessageLog.VerdictText(MessageVerdict.Clean));
        Assert.Equal("infected", MessageLog.VerdictText(MessageVerdict.Infected));
        Assert.Equal("error", MessageLog.VerdictText(MessageVerdict.Error));
    }

    [Fact]
    public void InfectedMessageLine()
    {
        var line = MessageLog.Format(Sample with
        {
            Verdict = MessageVerdict.Infected,
            Virus = "Win.Test.EICAR_HDB-1",
            Action = MessageAction.Rejected,
            Downstream = "",
        });
        Assert.Contains("verdict=infected virus=Win.Test.EICAR_HDB-1 action=rejected downstream=\"\" ms=37", line, StringComparison.Ordinal);
    }

    [Fact]
    public void ConcurrentWritesGiveWholeLines()
    {
        var output = new MemoryStream();
        var log = new MessageLog(output);
        Parallel.For(0, 2000, i => log.Write(Sample with { Session = "s" + i, Downstream = new string('x', i % 500) }));

        var lines = Encoding.UTF8.GetString(output.ToArray()).Split('\n');
        Assert.Equal("", lines[^1]);
        Assert.Equal(2000, lines.Length - 1);
        Assert.All(lines[..^1], l => Assert.Matches("^session=s[0-9]+ client=.* ms=37$", l));
    }

    [Fact]
    public void DaemonMessagesCarryLevelPrefixes()
    {
        Assert.Equal("<6>started\n", Log.Format(LogLevel.Info, "started"));
        Assert.Equal("<4>slow downstream\n", Log.Format(LogLevel.Warning, "slow downstream"));
        Assert.Equal("<3>one\n<3>two\n", Log.Format(LogLevel.Error, "one\r\ntwo\n"));
    }
}
