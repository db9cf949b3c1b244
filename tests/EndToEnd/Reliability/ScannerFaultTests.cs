using System.Diagnostics;
using System.Text;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// The scanner cannot finish: a 10 GiB zip bomb with libclamav's size limits off and a 1 s scan
// timeout. The configured on_error decides (tempfail: 451 4.7.0, nothing delivered; pass: delivered
// with X-Virus-Status: Unscanned), the reply comes in bounded time, and the same gateway goes on
// scanning (EICAR still 554, clean mail still 250). A signature folder replaced with garbage while
// the gateway runs changes nothing (no reload on main yet: the loaded engine stays); at start-up
// it is a clear refusal to run.
public sealed class ScannerFaultTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("tempfail")]
    [InlineData("pass")]
    public async Task Scan_timeout_follows_on_error_and_the_gateway_keeps_scanning(string onError)
    {
        var bomb = Bombs.WithAttachment("scan-timeout", "bomb.zip", Bombs.ZerosZip10G);
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
            .Set("scan", "timeout", "1s")
            .Set("scan", "on_error", onError)
            .Set("scan", "max_scan_size", "0")
            .Set("scan", "max_file_size", "0")
            .Set("limits", "memory_threshold", "1M"));

        var clock = Stopwatch.StartNew();
        var attempt = await Traffic.SendAsync(gateway.Port, "scan-timeout", bomb);
        var elapsed = clock.Elapsed;
        var record = await gateway.WaitForLogRecordAsync(r => r.Get("verdict") == "error");
        output.WriteLine($"{onError}: {attempt} after {elapsed.TotalSeconds:0.0} s ({bomb.Length} bytes sent); log: {record}; " +
                         $"gateway peak RSS {gateway.ProcStatusKb("VmHWM") / 1024} MiB");
        Assert.True(elapsed < TimeSpan.FromSeconds(30), $"the reply took {elapsed}");

        if (onError == "tempfail")
        {
            Assert.True(attempt.Reply is { Code: 451, EnhancedCode: "4.7.0" }, attempt.ToString());
            Assert.Equal(0, downstream.Messages.Count);
        }
        else
        {
            Assert.True(attempt.Accepted, attempt.ToString());
            var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, TimeSpan.FromSeconds(10), "the unscanned message"));
            var fields = Delivered.SplitPrepended(delivered.Content, bomb);
            Assert.Contains(fields, f => f.Name == "X-Virus-Status" && f.Value.Trim() == "Unscanned");
        }

        // The same process: still alive, still scanning.
        var eicar = await Traffic.SendAsync(gateway.Port, "after-eicar", TestMessages.Plain("after-eicar", TestSignatures.Eicar));
        Assert.True(eicar.Reply is { Code: 554 }, eicar.ToString());
        var clean = await Traffic.SendAsync(gateway.Port, "after-clean", Traffic.Message("after-clean"));
        Assert.True(clean.Accepted, clean.ToString());
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Signature_folder_replaced_with_garbage_while_running_keeps_the_loaded_engine()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);

        foreach (var file in Directory.GetFiles(gateway.Config.DatabaseFolder))
        {
            File.Delete(file);
        }

        await File.WriteAllBytesAsync(Path.Combine(gateway.Config.DatabaseFolder, "main.cvd"), TestMessages.Noise(4096, 7));
        await File.WriteAllTextAsync(Path.Combine(gateway.Config.DatabaseFolder, "broken.ndb"), "not:a:signature\n\0\0\0");

        var eicar = await Traffic.SendAsync(gateway.Port, "garbage-eicar", TestMessages.Plain("garbage-eicar", TestSignatures.Eicar));
        Assert.True(eicar.Reply is { Code: 554 } && eicar.Reply.Text.Contains(TestSignatures.EicarName), eicar.ToString());
        var clean = await Traffic.SendAsync(gateway.Port, "garbage-clean", Traffic.Message("garbage-clean"));
        Assert.True(clean.Accepted, clean.ToString());
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Garbage_signature_folder_at_start_is_a_clear_refusal_to_run()
    {
        var config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), GatewayIni.FreePort());
        try
        {
            await config.WriteAsync();
            foreach (var file in Directory.GetFiles(config.DatabaseFolder))
            {
                File.Delete(file);
            }

            await File.WriteAllBytesAsync(Path.Combine(config.DatabaseFolder, "main.cvd"), TestMessages.Noise(4096, 7));
            var result = await PortcullisBinary.RunAsync("run", "--config", config.FilePath);

            Assert.True(result.ExitCode == 69, result.ToString());
            Assert.Contains("cannot load signatures", result.Stdout + result.Stderr);
        }
        finally
        {
            Directory.Delete(config.Root, recursive: true);
        }
    }
}
