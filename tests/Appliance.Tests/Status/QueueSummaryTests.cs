using Portcullis.Appliance.Status;
using Xunit;

namespace Portcullis.Appliance.Tests.Status;

// The queue's line on the status page and in `portcullis status`.
public sealed class QueueSummaryTests
{
    [Fact]
    public void EmptyQueueHasNoOldestEntry()
    {
        Assert.Equal("0 messages, 0 bytes; since start 0 recipients delivered, 0 deferred, 0 bounced, 0 expired",
            StatusReport.QueueSummary(new GatewayMetrics()));
    }

    [Fact]
    public void QueueLineShowsSizeAgeAndCounters()
    {
        var metrics = new GatewayMetrics();
        metrics.SetQueue(3, 4096, DateTimeOffset.UtcNow.AddHours(-2).AddMinutes(-1));
        metrics.QueueDelivered(5);
        metrics.QueueDeferred();
        metrics.QueueDeferred();
        metrics.QueueBounced();
        metrics.QueueExpired();

        var line = StatusReport.QueueSummary(metrics);

        Assert.StartsWith("3 messages, 4096 bytes, oldest 2h", line, StringComparison.Ordinal);
        Assert.EndsWith("; since start 5 recipients delivered, 2 deferred, 1 bounced, 1 expired", line, StringComparison.Ordinal);
    }
}
