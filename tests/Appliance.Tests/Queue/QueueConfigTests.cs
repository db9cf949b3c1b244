using Portcullis.Appliance.Configuration;
using Xunit;
using static Portcullis.Appliance.Tests.Configuration.IniText;

namespace Portcullis.Appliance.Tests.Queue;

public sealed class QueueConfigTests
{
    [Fact]
    public void DefaultsAreOffWithTheDocumentedSchedule()
    {
        var queue = Load("").Queue;
        Assert.Equal(QueueMode.Off, queue.Mode);
        Assert.Equal(4, queue.Concurrency);
        Assert.Equal((TimeSpan.FromMinutes(1), TimeSpan.FromHours(1), TimeSpan.FromDays(5), TimeSpan.Zero),
            (queue.MinBackoff, queue.MaxBackoff, queue.MaxLifetime, queue.DelayWarning));
        Assert.Equal(2L << 30, queue.MaxSize);
    }

    [Fact]
    public void EveryKeyIsRead()
    {
        var config = Load("[queue]\nmode = Fallback\nconcurrency = 8\nmin_backoff = 30s\nmax_backoff = 2h\nmax_lifetime = 3d\n" +
                          "delay_warning = 4h\nmax_size = 500M\n[relay]\nrecipients_file = /etc/portcullis/recipients\n");
        Assert.Equal(new QueueSection
        {
            Mode = QueueMode.Fallback, Concurrency = 8, MinBackoff = TimeSpan.FromSeconds(30), MaxBackoff = TimeSpan.FromHours(2),
            MaxLifetime = TimeSpan.FromDays(3), DelayWarning = TimeSpan.FromHours(4), MaxSize = 500L << 20,
        }, config.Queue);
        Assert.Equal("/etc/portcullis/recipients", config.Relay.RecipientsFile);
    }

    [Theory]
    [InlineData("mode = sometimes", "[queue] mode")]
    [InlineData("concurrency = 0", "[queue] concurrency")]
    [InlineData("max_size = lots", "[queue] max_size")]
    [InlineData("max_lifetime = 90d", "[queue] max_lifetime")]
    [InlineData("min_backoff = 10m\nmax_backoff = 5m", "[queue] max_backoff")]
    public void ABadValueIsAnErrorNamingTheKey(string lines, string key) =>
        Assert.Contains(key, SingleError("[queue]\n" + lines + "\n"), StringComparison.Ordinal);

    [Fact]
    public void QueueingWithoutARecipientsFileIsWarnedAbout()
    {
        var account = new ServiceAccount("root", 0, new HashSet<uint> { 0 }, new Dictionary<uint, string>());
        Assert.Contains(ConfigChecks.Warnings(Load("[queue]\nmode = fallback\n"), account),
            w => w.Contains("recipients_file", StringComparison.Ordinal) && w.Contains("backscatter", StringComparison.Ordinal));
        Assert.DoesNotContain(ConfigChecks.Warnings(Load("[queue]\nmode = fallback\n[relay]\nrecipients_file = /etc/portcullis/recipients\n"), account),
            w => w.Contains("recipients_file", StringComparison.Ordinal));
        Assert.DoesNotContain(ConfigChecks.Warnings(Load(""), account), w => w.Contains("recipients_file", StringComparison.Ordinal));
    }
}
