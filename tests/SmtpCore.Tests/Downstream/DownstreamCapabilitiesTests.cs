using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

public class DownstreamCapabilitiesTests
{
    [Fact]
    public void ParsesAPostfixStyleEhloReply()
    {
        var ehlo = new SmtpReply(250, null,
            "mx.example.org", "PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS", "AUTH PLAIN LOGIN",
            "AUTH=PLAIN LOGIN CRAM-MD5", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING",
            "XFORWARD NAME ADDR PROTO HELO SOURCE");

        var caps = DownstreamCapabilities.Parse(ehlo);

        Assert.True(caps.Pipelining);
        Assert.True(caps.Chunking);
        Assert.True(caps.Dsn);
        Assert.True(caps.EightBitMime);
        Assert.True(caps.SmtpUtf8);
        Assert.True(caps.StartTls);
        Assert.True(caps.EnhancedStatusCodes);
        Assert.Equal(10240000, caps.MaxSize);
        Assert.Equal(["ADDR", "HELO", "NAME", "PROTO", "SOURCE"], caps.XForward.Order());
        Assert.True(caps.XForward.Contains("name"));
        Assert.Equal(["CRAM-MD5", "LOGIN", "PLAIN"], caps.AuthMechanisms.Order());
        Assert.Equal("10240000", caps.Raw["SIZE"]);
        Assert.Equal("", caps.Raw["VRFY"]);
        Assert.False(caps.Raw.ContainsKey("MX.EXAMPLE.ORG"));   // the greeting line is not a keyword
    }

    [Theory]
    [InlineData("SIZE", null)]
    [InlineData("SIZE 0", null)]
    [InlineData("SIZE junk", null)]
    [InlineData("size 52428800", 52428800L)]
    public void SizeWithoutALimitIsNull(string line, long? expected)
    {
        var caps = DownstreamCapabilities.Parse(new SmtpReply(250, null, "mx", line));
        Assert.Equal(expected, caps.MaxSize);
        Assert.True(caps.Raw.ContainsKey("SIZE"));
    }

    [Fact]
    public void AHeloReplyOffersNothing()
    {
        var caps = DownstreamCapabilities.Parse(new SmtpReply(250, null, "mx.example.org"));
        Assert.False(caps.Pipelining || caps.Chunking || caps.Dsn || caps.EightBitMime || caps.SmtpUtf8);
        Assert.Null(caps.MaxSize);
        Assert.Empty(caps.XForward);
        Assert.Empty(caps.Raw);
    }

    // The last parse is reused only for the very same lines.
    [Fact]
    public void AnotherServersReplyIsParsedAfresh()
    {
        var plain = new SmtpReply(250, null, "a.test", "PIPELINING", "SIZE 1000");
        var richer = new SmtpReply(250, null, "a.test", "PIPELINING", "SIZE 2000", "DSN");

        var first = DownstreamCapabilities.Parse(plain);
        var second = DownstreamCapabilities.Parse(richer);
        var third = DownstreamCapabilities.Parse(new SmtpReply(250, null, "a.test", "PIPELINING", "SIZE 1000"));

        Assert.Equal(1000, first.MaxSize);
        Assert.False(first.Dsn);
        Assert.Equal(2000, second.MaxSize);
        Assert.True(second.Dsn);
        Assert.Equal(1000, third.MaxSize);
        Assert.False(third.Dsn);
    }
}
