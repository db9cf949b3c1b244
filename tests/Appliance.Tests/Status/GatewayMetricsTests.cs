using System.Text;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Status;
using Xunit;

namespace Portcullis.Appliance.Tests.Status;

// Detections by class, the refusal counters and the process_* families.
public sealed class GatewayMetricsTests
{
    [Fact]
    public void DetectionsAreCountedByTheirClassAndAction()
    {
        var metrics = new GatewayMetrics();
        foreach (var (virus, action) in new[]
                 {
                     ("Win.Test.EICAR_HDB-1", MessageAction.Rejected), ("Banned.Extension.exe", MessageAction.Rejected),
                     ("Banned.DoubleExtension", MessageAction.Stripped), ("PUA.Win.Packer.Upx", MessageAction.Tagged),
                     ("Heuristics.Phishing.Email.SpoofedDomain", MessageAction.Rejected), ("Custom.Sig.UNOFFICIAL", MessageAction.Rejected),
                 })
        {
            metrics.Message(new MessageLogEntry { Verdict = MessageVerdict.Infected, Virus = virus, Action = action });
        }

        metrics.Message(new MessageLogEntry { Verdict = MessageVerdict.Clean, Action = MessageAction.Delivered });
        Assert.Equal(
            [("banned", "rejected", 1L), ("banned", "stripped", 1L), ("phishing", "rejected", 1L), ("pua", "tagged", 1L),
             ("unofficial", "rejected", 1L), ("virus", "rejected", 1L)],
            metrics.Detections());
        Assert.Equal(6, metrics.MessagesWith("infected"));
    }

    [Fact]
    public void RefusalsAreCountedPerKind()
    {
        var metrics = new GatewayMetrics();
        metrics.RelayRefused();
        metrics.AuthFailed();
        metrics.AuthFailed();
        metrics.ConnectionLimitRefused("per_ip");
        metrics.ConnectionLimitRefused("per_ip");
        metrics.ConnectionLimitRefused("total");
        Assert.Equal(1, metrics.RelayRefusals);
        Assert.Equal(2, metrics.AuthFailures);
        Assert.Equal([("per_ip", 2L), ("total", 1L)], metrics.ConnectionLimitRefusals());
    }

    [Fact]
    public void ProcessFamiliesDescribeThisProcess()
    {
        var text = new StringBuilder();
        StatusReport.ProcessMetrics(text);
        var values = text.ToString().Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#'))
            .ToDictionary(l => l.Split(' ')[0], l => double.Parse(l.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(Environment.WorkingSet, values["process_resident_memory_bytes"], tolerance: 64 << 20);
        Assert.Equal(Directory.GetFileSystemEntries("/proc/self/fd").Length, values["process_open_fds"], tolerance: 16);
        Assert.True(values["process_cpu_seconds_total"] > 0);
        Assert.InRange(values["process_start_time_seconds"], DateTimeOffset.UtcNow.AddHours(-1).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1);
        Assert.Contains("# TYPE process_cpu_seconds_total counter\n", text.ToString());
    }
}
