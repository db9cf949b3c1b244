using Portcullis.Appliance.Configuration;
using Xunit;

namespace Portcullis.Appliance.Tests.Configuration;

// The value syntaxes on their own, edges included.
public sealed class ConfigValuesTests
{
    [Theory]
    [InlineData("0", 0L)]
    [InlineData("1", 1L)]
    [InlineData("1024", 1024L)]
    [InlineData("512B", 512L)]
    [InlineData("512b", 512L)]
    [InlineData("1k", 1024L)]
    [InlineData("1K", 1024L)]
    [InlineData("1KB", 1024L)]
    [InlineData("1kb", 1024L)]
    [InlineData("50M", 50L << 20)]
    [InlineData("50mB", 50L << 20)]
    [InlineData("1G", 1L << 30)]
    [InlineData("8G", 8L << 30)]
    [InlineData("  7M  ", 7L << 20)]
    [InlineData("0008K", 8192L)]
    [InlineData("8589934591G", 8589934591L << 30)]
    [InlineData("9223372036854775807", long.MaxValue)]
    public void SizesParse(string text, long expected)
    {
        Assert.True(ConfigValues.TryParseSize(text, out var bytes));
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("")]
    [InlineData("B")]
    [InlineData("K")]
    [InlineData("KB")]
    [InlineData("-1")]
    [InlineData("+1")]
    [InlineData("1.5M")]
    [InlineData("1 M")]
    [InlineData("1T")]
    [InlineData("1MBB")]
    [InlineData("1BK")]
    [InlineData("12Q")]
    [InlineData("0x10")]
    [InlineData("8589934592G")]
    [InlineData("9223372036854775808")]
    [InlineData("١٢")]
    public void BadSizesAreRefused(string text)
    {
        Assert.False(ConfigValues.TryParseSize(text, out _));
    }

    [Theory]
    [InlineData("0", 0)]
    [InlineData("30", 30)]
    [InlineData("30s", 30)]
    [InlineData("30S", 30)]
    [InlineData("5m", 300)]
    [InlineData("5M", 300)]
    [InlineData("1h", 3600)]
    [InlineData("24H", 86400)]
    [InlineData("3d", 259200)]
    [InlineData("1D", 86400)]
    [InlineData(" 2m ", 120)]
    public void TimesParse(string text, int seconds)
    {
        Assert.True(ConfigValues.TryParseTime(text, out var time));
        Assert.Equal(TimeSpan.FromSeconds(seconds), time);
    }

    [Theory]
    [InlineData("")]
    [InlineData("s")]
    [InlineData("d")]
    [InlineData("1ms")]
    [InlineData("1.5s")]
    [InlineData("-5")]
    [InlineData("5 m")]
    [InlineData("99999999999999h")]
    public void BadTimesAreRefused(string text)
    {
        Assert.False(ConfigValues.TryParseTime(text, out _));
    }

    [Theory]
    [InlineData("yes", true)]
    [InlineData("YES", true)]
    [InlineData("true", true)]
    [InlineData("On", true)]
    [InlineData("1", true)]
    [InlineData("no", false)]
    [InlineData("False", false)]
    [InlineData("off", false)]
    [InlineData("0", false)]
    public void BooleansParse(string text, bool expected)
    {
        Assert.True(ConfigValues.TryParseBool(text, out var value));
        Assert.Equal(expected, value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("y")]
    [InlineData("2")]
    [InlineData("enabled")]
    public void BadBooleansAreRefused(string text)
    {
        Assert.False(ConfigValues.TryParseBool(text, out _));
    }

    [Fact]
    public void ListsSplitOnCommasAndWhitespace()
    {
        Assert.Equal(["a", "b", "c", "d", "e"], ConfigValues.SplitList(" a,b , c\td,,\n e "));
        Assert.Empty(ConfigValues.SplitList(" , ,"));
    }

    [Theory]
    [InlineData("mail.example.com", true)]
    [InlineData("localhost", true)]
    [InlineData("a-b.example.", true)]
    [InlineData("x1", true)]
    [InlineData("", false)]
    [InlineData("a..b", false)]
    [InlineData("-a.example", false)]
    [InlineData("a-.example", false)]
    [InlineData("under_score.example", false)]
    [InlineData("1.2.3.4", false)]
    [InlineData("space here", false)]
    public void HostNames(string text, bool valid)
    {
        Assert.Equal(valid, ConfigValues.IsHostName(text));
    }

    [Fact]
    public void HostNameLengthLimits()
    {
        Assert.True(ConfigValues.IsHostName(new string('a', 63) + ".example"));
        Assert.False(ConfigValues.IsHostName(new string('a', 64) + ".example"));
        var longName = string.Join('.', Enumerable.Repeat(new string('a', 50), 5));
        Assert.False(ConfigValues.IsHostName(longName));
    }

    [Theory]
    [InlineData(0L, "0")]
    [InlineData(1000L, "1000")]
    [InlineData(1024L, "1K")]
    [InlineData(50L << 20, "50M")]
    [InlineData(1L << 30, "1G")]
    [InlineData(1536L << 20, "1536M")]
    public void SizesFormatBackToTheirShortestForm(long bytes, string text)
    {
        Assert.Equal(text, ConfigValues.FormatSize(bytes));
        Assert.True(ConfigValues.TryParseSize(text, out var parsed));
        Assert.Equal(bytes, parsed);
    }
}
