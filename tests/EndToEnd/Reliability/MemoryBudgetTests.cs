using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// [limits] memory_budget: past it a message spills to temp_folder at once, however small. Seen
// from outside with temp_folder on a tmpfs that is then filled (libclamav's scratch_folder kept
// elsewhere so scanning itself still works): under a budget too small for one segment, an 8 KB
// message needs the disk and is deferred with 452 4.3.1; under the default budget the same
// message stays in memory and is delivered. Nothing refused is delivered.
public sealed class MemoryBudgetTests(ITestOutputHelper output)
{
    [TmpfsFact]
    public async Task Past_the_budget_small_mail_goes_to_disk_and_a_full_disk_defers_it_with_452()
    {
        var budgetResults = await SendOnFullDiskAsync("1K", "budget");
        var defaultResults = await SendOnFullDiskAsync(null, "default");

        Assert.All(budgetResults, a => Assert.True(a.Reply is { Code: 452, EnhancedCode: "4.3.1" }, $"budget 1K, disk full: {a}"));
        Assert.All(defaultResults, a => Assert.True(a.Accepted, $"default budget, disk full: {a}"));
    }

    private async Task<List<Attempt>> SendOnFullDiskAsync(string? budget, string name)
    {
        await using var downstream = TestSmtpServer.Start();
        var config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), downstream.Port);
        var scratch = Path.Combine(config.Root, "scratch");
        Directory.CreateDirectory(scratch);
        config.Set("scan", "scratch_folder", scratch);
        if (budget is not null)
        {
            config.Set("limits", "memory_budget", budget);
        }

        Directory.CreateDirectory(config.SpoolFolder);
        Tmpfs.Mount(config.SpoolFolder, "1m");
        try
        {
            await using var gateway = await GatewayProcess.StartAsync(output, config, downstream);
            Tmpfs.Fill(Path.Combine(config.SpoolFolder, "filler"));

            var attempts = await Traffic.RunAsync(4, 2, i =>
                Traffic.SendAsync(gateway.Port, $"{name}-{i}", Traffic.Message($"{name}-{i}", 8 * 1024)));
            output.WriteLine($"memory_budget {budget ?? "auto"}, temp_folder full: {Traffic.Summary(attempts)}");

            await downstream.Messages.WaitForCountAsync(attempts.Count(a => a.Accepted), TimeSpan.FromSeconds(20), "the accepted messages");
            Assert.All(attempts, a => Assert.Equal(a.Accepted ? 1 : 0, Traffic.CopiesOf(downstream, a.Id)));
            File.Delete(Path.Combine(config.SpoolFolder, "filler"));
            await gateway.StopAsync();
            return attempts;
        }
        finally
        {
            Tmpfs.Unmount(config.SpoolFolder);
            Directory.Delete(config.Root, recursive: true);
        }
    }
}
