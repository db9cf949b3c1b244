using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Runtime;
using Xunit;

namespace Portcullis.Appliance.Tests.Runtime;

// The daemon raises its soft RLIMIT_NOFILE to the hard limit (NativeAOT does not), and
// check-config warns when max_connections needs more open files than the hard limit allows.
public sealed class OpenFileLimitTests
{
    [Fact]
    public void A_soft_limit_below_the_hard_one_is_raised_to_it()
    {
        var (_, hard) = OpenFileLimit.Read()!.Value;
        // One below the hard limit: lower than before, yet never short for other tests running beside.
        Assert.True(OpenFileLimit.TrySetSoft(hard - 1));
        Assert.Equal(hard - 1, OpenFileLimit.Read()!.Value.Soft);

        var raised = OpenFileLimit.RaiseToHard();

        Assert.Equal(hard, raised);
        Assert.Equal((hard, hard), OpenFileLimit.Read()!.Value);
    }

    [Fact]
    public void Check_config_warns_when_max_connections_needs_more_files_than_the_hard_limit()
    {
        var warning = ConfigChecks.OpenFileWarning(2000, 1024);

        Assert.NotNull(warning);
        Assert.Contains("max_connections 2000 needs about 4128 open files", warning);
        Assert.Contains("allows about 448 sessions", warning);
        Assert.Null(ConfigChecks.OpenFileWarning(2000, 65536));
        Assert.Null(ConfigChecks.OpenFileWarning(0, 64));
    }
}
