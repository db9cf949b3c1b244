using Portcullis.Appliance.Cli;
using Portcullis.Appliance.Configuration;
using Xunit;

namespace Portcullis.Appliance.Tests.Cli;

// Argument parsing, exit codes and the check-config summary (without touching the console).
public sealed class CommandLineTests
{
    private static string[] Split(string args) => args.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    [Theory]
    [InlineData("", null, "")]
    [InlineData("--config /x.ini", "/x.ini", "")]
    [InlineData("-c /x.ini a -", "/x.ini", "a -")]
    [InlineData("--config=/y.ini b", "/y.ini", "b")]
    [InlineData("a -- --config", null, "a --config")]
    public void ArgumentsParse(string args, string? config, string paths)
    {
        Assert.True(CommandArguments.TryParse(Split(args), out var parsed, out _));
        Assert.Equal(config, parsed.ConfigPath);
        Assert.Equal(Split(paths), parsed.Paths);
    }

    [Theory]
    [InlineData("--config")]
    [InlineData("--config=")]
    [InlineData("--verbose")]
    public void BadArgumentsAreRefused(string args)
    {
        Assert.False(CommandArguments.TryParse(Split(args), out _, out var problem));
        Assert.NotEmpty(problem);
    }

    [Theory]
    [InlineData("")]
    [InlineData("frobnicate")]
    [InlineData("run extra")]
    [InlineData("check-config --bogus")]
    [InlineData("scan")]
    public async Task UsageErrorsExit64(string args)
    {
        Assert.Equal(CommandLine.ExitUsage, await CommandLine.RunAsync(Split(args)));
    }

    [Fact]
    public async Task CheckConfigExitCodes()
    {
        var path = Path.Combine(Path.GetTempPath(), "portcullis-cli-" + Guid.NewGuid().ToString("N") + ".ini");
        try
        {
            File.WriteAllText(path, "[general]\nsmtp_server_port = 2626\n");
            Assert.Equal(CommandLine.ExitOk, await CommandLine.RunAsync(["check-config", "--config", path]));

            File.WriteAllText(path, "[general]\nsmtp_server_port = nope\n");
            Assert.Equal(CommandLine.ExitConfig, await CommandLine.RunAsync(["check-config", "--config", path]));
            Assert.Equal(CommandLine.ExitConfig, await CommandLine.RunAsync(["run", "--config", path]));
        }
        finally
        {
            File.Delete(path);
        }

        Assert.Equal(CommandLine.ExitConfig, await CommandLine.RunAsync(["check-config", "--config", path]));
    }

    [Fact]
    public void SummaryNamesListenersTargetAndDatabase()
    {
        var config = ConfigLoader.LoadFromString("[general]\ninterfaces = 0.0.0.0:25 [::]:465/tls\nsmtp_server_address = ::1\n", "/t.ini");
        var summary = CommandLine.Summary(config);
        Assert.Contains("configuration OK: /t.ini", summary, StringComparison.Ordinal);
        Assert.Contains("listeners: 0.0.0.0:25, [::]:465/tls", summary, StringComparison.Ordinal);
        Assert.Contains("forward to: [::1]:2525", summary, StringComparison.Ordinal);
        Assert.Contains("database folder: /var/lib/clamav", summary, StringComparison.Ordinal);
    }
}
