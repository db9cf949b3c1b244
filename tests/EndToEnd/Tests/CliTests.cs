using Portcullis.EndToEnd.Harness;
using Xunit;

namespace Portcullis.EndToEnd.Tests;

// The command-line verbs other than `run`.
public sealed class CliTests : IAsyncLifetime
{
    private GatewayIni config = null!;

    public async Task InitializeAsync()
    {
        PortcullisBinary.Require(); // fail before making anything
        config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), GatewayIni.FreePort());
        await config.WriteAsync();
    }

    public Task DisposeAsync()
    {
        if (config is not null && Directory.Exists(config.Root))
        {
            Directory.Delete(config.Root, recursive: true);
        }

        return Task.CompletedTask;
    }

    [Fact]
    public async Task Scan_finds_clam_exe_and_exits_1()
    {
        var result = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, TestSignatures.ClamExe);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Matches($@"(?m)^{Regex(TestSignatures.ClamExe)}: \S*{Regex(TestSignatures.ClamExeName)}\S* FOUND$", result.Stdout);
    }

    [Fact]
    public async Task Scan_of_a_clean_file_exits_0_with_OK()
    {
        var clean = Path.Combine(config.Root, "clean.txt");
        await File.WriteAllTextAsync(clean, "nothing to see here\n");

        var result = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, clean);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches($"(?m)^{Regex(clean)}: OK$", result.Stdout);
    }

    [Fact]
    public async Task Scan_of_clean_and_infected_files_reports_each_and_exits_1()
    {
        var clean = Path.Combine(config.Root, "clean.txt");
        await File.WriteAllTextAsync(clean, "nothing to see here\n");
        var eicar = Path.Combine(config.Root, "eicar.txt");
        await File.WriteAllTextAsync(eicar, TestSignatures.Eicar);

        var result = await PortcullisBinary.RunAsync("scan", "--config", config.FilePath, clean, eicar);

        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Matches($"(?m)^{Regex(clean)}: OK$", result.Stdout);
        Assert.Matches($@"(?m)^{Regex(eicar)}: \S*{Regex(TestSignatures.EicarName)}\S* FOUND$", result.Stdout);
    }

    [Fact]
    public async Task Check_config_accepts_the_test_configuration()
    {
        var result = await PortcullisBinary.RunAsync("check-config", "--config", config.FilePath);

        Assert.True(result.ExitCode == 0, result.ToString());
    }

    [Fact]
    public async Task Check_config_with_a_bad_value_exits_78_naming_file_section_and_key()
    {
        config.Set("limits", "max_recipients", "plenty");
        await File.WriteAllTextAsync(config.FilePath, config.Render());

        var result = await PortcullisBinary.RunAsync("check-config", "--config", config.FilePath);

        Assert.True(result.ExitCode == 78, result.ToString());
        Assert.Contains(config.FilePath, result.Stderr);
        Assert.Contains("limits", result.Stderr);
        Assert.Contains("max_recipients", result.Stderr);
    }

    [Fact]
    public async Task Version_prints_something_and_exits_0()
    {
        var result = await PortcullisBinary.RunAsync("version");

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches(@"\d+\.\d+", result.Stdout);
    }

    private static string Regex(string text) => System.Text.RegularExpressions.Regex.Escape(text);
}
